"""bspump-kafka run 24/7 against the real broker (issue 15): quiet and cheap while the broker restarts, fast
restarts with static group membership, and an early first commit.

Every test runs on both client backends (``client = aiokafka`` and ``client = confluent``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import pytest
from conftest import TopicFactory
from test_kafka import committed, json_values, kafka_app, produce

import bspump
import bspump.kafka
from bspump.testing import wait_for

pytestmark = [pytest.mark.kafka]

CLIENTS = ["aiokafka", "confluent"]


@pytest.fixture(params=CLIENTS)
def client(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- 1. quiet and cheap while the broker is down -----------------------------------------------------------


class Numbers(bspump.Source):
    """Emits ``{"n": i}``, ``batch`` events every ``pause`` seconds, for as long as the pipeline takes them."""

    def __init__(self, *args: Any, batch: int = 100, pause: float = 0.02, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batch = batch
        self.pause = pause
        self.emitted = 0

    async def main(self) -> None:
        while True:
            start = self.emitted
            self.emitted += self.batch
            await self.emit([{"n": i} for i in range(start, self.emitted)])
            await asyncio.sleep(self.pause)


class Pass(bspump.Processor):
    def process(self, context: bspump.Context, event: Any) -> Any:
        return event


class LogCounter(logging.Handler):
    """Counts the log records of WARNING and above, per logger and message (numbers aside)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[tuple[str, str]] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[(record.name, re.sub(r"\d+", "#", record.getMessage()))] += 1

    def client_lines(self) -> Counter[tuple[str, str]]:
        """The client library's lines (bspump's own say what it does, once per reconnect attempt)."""
        return Counter({k: n for k, n in self.counts.items()
                        if not k[0].startswith("bspump.") or k[0] == "bspump.kafka.librdkafka"})

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@pytest.mark.server_control
@pytest.mark.timeout(120)
async def test_a_broker_restart_is_quiet_and_cheap(
    kafka_bootstrap: str, kafka_topic_factory: TopicFactory, client: str, server_control: Any
) -> None:
    """A sink holding events to send and a source in its group ride out a broker restart printing few lines
    and using little CPU; everything emitted is delivered afterwards."""
    target = await kafka_topic_factory(partitions=1)
    idle_input = await kafka_topic_factory(partitions=1)
    app, svc = kafka_app(kafka_bootstrap, client, reconnect_initial=0.2, reconnect_max=2.0)
    producing = bspump.Pipeline(app, "Producing")
    numbers = Numbers(app, producing)
    sink = bspump.kafka.KafkaSink(app, producing, connection="KafkaConnection", config={"topic": target})
    producing.build(numbers, Pass(app, producing), sink)
    svc.add_pipeline(producing)
    consuming = bspump.Pipeline(app, "Consuming")
    source = bspump.kafka.KafkaSource(app, consuming, connection="KafkaConnection",
                                      config={"topics": idle_input, "group_id": f"{idle_input}-g"})
    consuming.build(source, Pass(app, consuming), bspump.NullSink(app, consuming))
    svc.add_pipeline(consuming)

    counter = LogCounter()
    task = asyncio.create_task(app.run_async())
    try:
        await wait_for(lambda: sink.sent >= 2000 or task.done(), 60, "2000 events written")
        await wait_for(lambda: source.client is not None and bool(source.client.assignment()), 30,
                       "the source's assignment")
        logging.getLogger().addHandler(counter)
        wall, cpu = time.monotonic(), time.process_time()
        await asyncio.to_thread(server_control.restart, "kafka")
        emitted = numbers.emitted
        await wait_for(lambda: sink.sent >= emitted or task.done(), 60, "every event emitted written")
        wall, cpu = time.monotonic() - wall, time.process_time() - cpu
        logging.getLogger().removeHandler(counter)
        assert not task.done(), "the application stopped instead of reconnecting"
    finally:
        logging.getLogger().removeHandler(counter)
        app.stop()
        await asyncio.wait_for(task, 60)
    top = [(name, text[:100], n) for (name, text), n in counter.counts.most_common(5)]
    print(f"[{client}] broker restart: {wall:.2f} s, {cpu:.2f} s CPU ({cpu / wall:.0%} of a core), "
          f"{counter.total} log lines; most frequent: {top}")
    assert counter.total < 100, f"{counter.total} log lines over the restart; most frequent: {top}"
    # client_log_interval (10 s by default): each distinct client line once per 10 s
    repeated = {k: n for k, n in counter.client_lines().items() if n > 1 + wall // 10}
    assert not repeated, f"client lines repeated within client_log_interval: {repeated}"
    assert cpu / wall < 0.3, f"{cpu:.2f} s CPU in {wall:.2f} s over the restart"
    assert sink.sent == numbers.emitted


# -- 2. static group membership: a restarted member takes its partitions back at once ------------------------

SESSION_TIMEOUT_MS = 6000  # the broker's group.min.session.timeout.ms: the shortest a dynamic member can wait


def member_app(bootstrap: str, client: str, source_topic: str, target_topic: str, group: str,
               instance_id: str) -> tuple[bspump.BSPumpApplication, bspump.kafka.KafkaSink]:
    """A group member copying ``source_topic`` to ``target_topic``; static when ``instance_id`` is set."""
    app, svc = kafka_app(bootstrap, client)
    pipeline = bspump.Pipeline(app, "Member")
    source_config: dict[str, Any] = {"topics": source_topic, "group_id": group, "batch_size": 100,
                                     "session_timeout_ms": SESSION_TIMEOUT_MS, "heartbeat_interval_ms": 1000}
    if instance_id:
        source_config["group_instance_id"] = instance_id
    source = bspump.kafka.KafkaSource(app, pipeline, connection="KafkaConnection", config=source_config)
    sink = bspump.kafka.KafkaSink(app, pipeline, connection="KafkaConnection", config={"topic": target_topic})
    pipeline.build(source, Pass(app, pipeline), sink)
    svc.add_pipeline(pipeline)
    return app, sink


def run_member(*args: str) -> int:
    """``python test_kafka_production.py member BOOTSTRAP CLIENT SOURCE TARGET GROUP [INSTANCE]``."""
    bootstrap, client, source_topic, target_topic, group, *instance = args
    app, _ = member_app(bootstrap, client, source_topic, target_topic, group, instance[0] if instance else "")
    return app.run()


@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
@pytest.mark.timeout(90)
async def test_a_restarted_static_member_takes_its_partitions_back_at_once(
    kafka_bootstrap: str, kafka_topic_factory: TopicFactory, client: str, static: bool, tmp_path: Any
) -> None:
    """A member is SIGKILLed and started again at once. A dynamic member's successor waits for the dead
    member's session to expire; a static one (same group_instance_id) takes the partitions back at once."""
    source_topic = await kafka_topic_factory(partitions=2)
    target_topic = await kafka_topic_factory(partitions=2)
    group = f"{source_topic}-g"
    instance_id = "member-1" if static else ""
    await produce(kafka_bootstrap, source_topic, json_values(0, 200))
    with open(tmp_path / "member.log", "wb") as log_file:
        victim = subprocess.Popen(
            [sys.executable, __file__, "member", kafka_bootstrap, client, source_topic, target_topic, group,
             *([instance_id] if instance_id else [])],
            stdout=log_file, stderr=subprocess.STDOUT, cwd=os.path.dirname(__file__))
    try:
        deadline = time.monotonic() + 30
        while None in await committed(kafka_bootstrap, group, source_topic, 2) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert None not in await committed(kafka_bootstrap, group, source_topic, 2), (
            "the first member never committed: " + (tmp_path / "member.log").read_text()[-2000:])
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
    await produce(kafka_bootstrap, source_topic, json_values(200, 400))
    app, sink = member_app(kafka_bootstrap, client, source_topic, target_topic, group, instance_id)
    started = time.monotonic()
    task = asyncio.create_task(app.run_async())
    try:
        await wait_for(lambda: sink.sent >= 200 or task.done(), 45, "the new events written")
        delay = time.monotonic() - started
    finally:
        app.stop()
        await asyncio.wait_for(task, 60)
    print(f"[{client}] {'static' if static else 'dynamic'} member restarted: first events written after "
          f"{delay:.2f} s (session timeout {SESSION_TIMEOUT_MS / 1000:.0f} s)")
    if static:
        assert delay < SESSION_TIMEOUT_MS / 1000 / 2, f"the static member waited {delay:.2f} s"
    else:  # what static membership saves: the dead member's session timeout
        assert delay >= SESSION_TIMEOUT_MS / 1000 * 0.7, f"the dynamic member waited only {delay:.2f} s"


# -- 5. the first commit comes with the first acknowledged batch --------------------------------------------


@pytest.mark.timeout(90)
async def test_the_first_acknowledged_batch_is_committed_at_once(
    kafka_bootstrap: str, kafka_topic_factory: TopicFactory, client: str
) -> None:
    """With a commit interval far longer than the test, offsets reach the broker as soon as the first batch
    of each partition was written; later batches wait for the interval (or the stop)."""
    source_topic = await kafka_topic_factory(partitions=2)
    target_topic = await kafka_topic_factory(partitions=2)
    group = f"{source_topic}-g"
    await produce(kafka_bootstrap, source_topic, json_values(0, 4000))
    app, svc = kafka_app(kafka_bootstrap, client)
    pipeline = bspump.Pipeline(app, "FirstCommit")
    source = bspump.kafka.KafkaSource(app, pipeline, connection="KafkaConnection", config={
        "topics": source_topic, "group_id": group, "format": "json", "batch_size": 100, "commit_interval": 600})
    sink = bspump.kafka.KafkaSink(app, pipeline, connection="KafkaConnection", config={"topic": target_topic})
    pipeline.build(source, Pass(app, pipeline), sink)
    svc.add_pipeline(pipeline)
    task = asyncio.create_task(app.run_async())
    try:
        await wait_for(lambda: sink.sent >= 100 or task.done(), 30, "the first batch written")
        started = time.monotonic()
        offsets: list[int | None] = [None, None]
        while None in offsets and time.monotonic() - started < 10:
            offsets = await committed(kafka_bootstrap, group, source_topic, 2)
        waited = time.monotonic() - started
        await wait_for(lambda: sink.sent >= 4000 or task.done(), 60, "every event written")
        commits_before_stop = source.commits
        assert not task.done()
    finally:
        app.stop()
        await asyncio.wait_for(task, 60)
    print(f"[{client}] first commit {waited:.2f} s after the first batch was written: {offsets}; "
          f"{commits_before_stop} commits before the stop")
    assert None not in offsets, f"nothing committed within 10 s of the first written batch: {offsets}"
    assert all(o is not None and o > 0 for o in offsets)
    assert commits_before_stop <= 2, "after the first batch of each partition, commits wait for the interval"
    assert sum(o or 0 for o in await committed(kafka_bootstrap, group, source_topic, 2)) == 4000  # at the stop


if __name__ == "__main__":
    if sys.argv[1:2] == ["member"]:
        sys.exit(run_member(*sys.argv[2:]))
