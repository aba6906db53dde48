"""bspump-kafka against the real broker: round trip, commit after acknowledgement, restart, dead letters.

Every test runs on both client backends (``client = aiokafka`` and ``client = confluent``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import murmur2
from conftest import TopicFactory

import bspump
import bspump.kafka
from bspump.testing import run_until, wait_for

pytestmark = [pytest.mark.kafka]

CLIENTS = ["aiokafka", "confluent"]


class AddField(bspump.Processor):
    """Marks each event so the output proves it went through the processor."""

    def process(self, context: bspump.Context, event: Any) -> Any:
        event["seen"] = True
        return event


class HoldingSink(bspump.Sink):
    """Acknowledges every event except those whose ``n`` is in ``hold``: they stay in flight for ever."""

    def __init__(self, *args: Any, hold: set[int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hold = hold
        self.acked = 0

    def put(self, batch: bspump.Batch) -> None:
        n = sum(1 for event in batch.events if event["n"] not in self.hold)
        self.acked += n
        if n:
            batch.delivery.ack(n)


def kafka_app(bootstrap: str, client: str, **connection: Any) -> tuple[bspump.BSPumpApplication, bspump.PumpService]:
    """An application with the connection ``KafkaConnection`` to the test broker through ``client``."""
    app = bspump.BSPumpApplication(load_plugins=False, environ={})
    svc = app.get_service("bspump.PumpService")
    svc.add_connection(bspump.kafka.KafkaConnection(app, "KafkaConnection", config={
        "bootstrap_servers": bootstrap, "client": client, **connection}))
    return app, svc


def build_app(
    bootstrap: str,
    client: str,
    source_config: dict[str, Any],
    sink_config: dict[str, Any],
    pipeline_config: dict[str, Any] | None = None,
    dead_letter_topic: str | None = None,
    processor: Callable[[bspump.BSPumpApplication, bspump.Pipeline], bspump.Processor] | None = None,
    pipeline_id: str = "KafkaRoundTrip",
) -> tuple[bspump.BSPumpApplication, bspump.Pipeline]:
    app, svc = kafka_app(bootstrap, client, reconnect_initial=0.2, reconnect_max=2.0)
    pipeline = bspump.Pipeline(app, pipeline_id, config=pipeline_config or {})
    source = bspump.kafka.KafkaSource(app, pipeline, connection="KafkaConnection",
                                      config={"format": "json", "commit_interval": 0.2, **source_config})
    sink = bspump.kafka.KafkaSink(app, pipeline, connection="KafkaConnection", config=sink_config)
    dead_letter = None
    if dead_letter_topic:
        dead_letter = bspump.kafka.KafkaSink(app, pipeline, id="DeadLetter", connection="KafkaConnection",
                                             config={"topic": dead_letter_topic})
    proc = processor(app, pipeline) if processor else AddField(app, pipeline)
    pipeline.build(source, proc, sink, dead_letter=dead_letter)
    svc.add_pipeline(pipeline)
    return app, pipeline


async def produce(bootstrap: str, topic: str, values: list[bytes], keys: list[bytes] | None = None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=v, key=None if keys is None else keys[i])
                   for i, v in enumerate(values)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def json_values(start: int, stop: int) -> list[bytes]:
    return [orjson.dumps({"n": i}) for i in range(start, stop)]


async def read_all(bootstrap: str, topic: str, expected: int, timeout: float = 60.0,
                   settle: float = 1.0) -> list[Any]:
    """Every record of ``topic`` from the beginning, once ``expected`` arrived and nothing more came."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    out: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        quiet_since = None
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            got = sum(len(v) for v in batches.values())
            for records in batches.values():
                out.extend(records)
            if len(out) >= expected:
                if got == 0:
                    quiet_since = quiet_since or time.monotonic()
                    if time.monotonic() - quiet_since >= settle:
                        break
                else:
                    quiet_since = None
    finally:
        await consumer.stop()
    return out


async def committed(bootstrap: str, group: str, topic: str, partitions: int) -> list[int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return [await consumer.committed(TopicPartition(topic, p)) for p in range(partitions)]
    finally:
        await consumer.stop()


async def end_offsets(bootstrap: str, topic: str, partitions: int) -> list[int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await consumer.end_offsets(tps)
        return [ends[tp] for tp in tps]
    finally:
        await consumer.stop()


@pytest.fixture(params=CLIENTS)
def client(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def topics(kafka_topic_factory: TopicFactory) -> AsyncIterator[Callable[..., Any]]:
    yield kafka_topic_factory


def sink_count(pipeline: bspump.Pipeline) -> int:
    sink = pipeline.sink
    assert isinstance(sink, bspump.kafka.KafkaSink)
    return sink.sent


async def test_round_trip_between_multi_partition_topics(
    kafka_bootstrap: str, kafka_topic_factory: TopicFactory, client: str
) -> None:
    source_topic = await kafka_topic_factory(partitions=3)
    target_topic = await kafka_topic_factory(partitions=2)
    total = 3000
    keys = [f"k{i % 50}".encode() for i in range(total)]
    await produce(kafka_bootstrap, source_topic, json_values(0, total), keys)
    group = f"{source_topic}-g"
    app, pipeline = build_app(kafka_bootstrap, client, {"topics": source_topic, "group_id": group},
                              {"topic": target_topic})
    await run_until(app, lambda: sink_count(pipeline) >= total, 60, f"{total} events written")

    records = await read_all(kafka_bootstrap, target_topic, total)
    values = [orjson.loads(r.value) for r in records]
    assert sorted(v["n"] for v in values) == list(range(total))
    assert all(v["seen"] for v in values)
    # Keys travel from source to sink, so one key stays in one partition and keeps its order.
    by_key: dict[bytes, set[int]] = {}
    for r in records:
        by_key.setdefault(r.key, set()).add(r.partition)
    assert len(by_key) == 50 and all(len(p) == 1 for p in by_key.values())
    # ... and on the partition the Java client (murmur2) picks, whichever backend wrote it.
    assert all(r.partition == (murmur2(r.key) & 0x7FFFFFFF) % 2 for r in records)
    # Graceful stop committed everything that was acknowledged: all of it.
    assert await committed(kafka_bootstrap, group, source_topic, 3) == await end_offsets(
        kafka_bootstrap, source_topic, 3)
    assert app.exit_code == 0


@pytest.mark.parametrize("keyed", [False, True])
async def test_idempotent_sink_writes_many_batches_once_and_in_order(
    kafka_bootstrap: str, kafka_topic_factory: TopicFactory, client: str, keyed: bool
) -> None:
    """Small batches (~100 records each) from an idempotent producer: the broker checks each batch's sequence
    number against the record count of the one before, so a wrong count fails the writes."""
    source_topic = await kafka_topic_factory(partitions=1)
    target_topic = await kafka_topic_factory(partitions=3)
    total = 6000
    await produce(kafka_bootstrap, source_topic, json_values(0, total),
                  [f"k{i % 7}".encode() for i in range(total)] if keyed else None)
    app, pipeline = build_app(kafka_bootstrap, client, {"topics": source_topic, "group_id": f"{source_topic}-g"},
                              {"topic": target_topic, "enable_idempotence": True, "max_batch_size": 4096})
    await run_until(app, lambda: sink_count(pipeline) >= total, 60, f"{total} events written")

    records = await read_all(kafka_bootstrap, target_topic, total)
    numbers = [orjson.loads(r.value)["n"] for r in records]
    assert sorted(numbers) == list(range(total))  # each once
    by_partition: dict[int, list[int]] = {}
    for r, n in zip(records, numbers, strict=True):
        by_partition.setdefault(r.partition, []).append(n)
    assert all(ns == sorted(ns) for ns in by_partition.values())  # in the order read
    expected = {(murmur2(f"k{i}".encode()) & 0x7FFFFFFF) % 3 for i in range(7)} if keyed else {0, 1, 2}
    assert set(by_partition) == expected
    assert app.exit_code == 0 and not pipeline.counters.errors


@pytest.mark.parametrize("keyed", [False, True])
async def test_records_larger_than_a_batch_go_alone_and_nothing_is_lost_or_reordered(
    kafka_bootstrap: str, kafka_topic_factory: TopicFactory, client: str, keyed: bool
) -> None:
    """``max_batch_size`` 2 KiB and every 25th record 3 KiB: a batch closes before each large record, which
    then goes in a batch of its own (the clients take one record of any size into an empty batch)."""
    source_topic = await kafka_topic_factory(partitions=1)
    target_topic = await kafka_topic_factory(partitions=2)
    total = 600
    values = [orjson.dumps({"n": i, "blob": "x" * (3000 if i % 25 == 7 else 10)}) for i in range(total)]
    keys = [f"k{i % 5}".encode() for i in range(total)] if keyed else None
    await produce(kafka_bootstrap, source_topic, values, keys)
    app, pipeline = build_app(kafka_bootstrap, client, {"topics": source_topic, "group_id": f"{source_topic}-g"},
                              {"topic": target_topic, "max_batch_size": 2048})
    await run_until(app, lambda: sink_count(pipeline) >= total, 60, f"{total} events written")

    records = await read_all(kafka_bootstrap, target_topic, total)
    events = [orjson.loads(r.value) for r in records]
    assert sorted(e["n"] for e in events) == list(range(total))
    assert all(len(e["blob"]) == (3000 if e["n"] % 25 == 7 else 10) for e in events)
    by_partition: dict[int, list[int]] = {}
    for r, e in zip(records, events, strict=True):
        by_partition.setdefault(r.partition, []).append(e["n"])
    assert all(ns == sorted(ns) for ns in by_partition.values())
    assert app.exit_code == 0 and not pipeline.counters.errors


class KeepContexts(bspump.Processor):
    """Keeps a copy of every event's context."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.contexts: list[dict[str, Any]] = []

    def process(self, context: bspump.Context, event: Any) -> Any:
        self.contexts.append(dict(context))
        return event


async def test_contexts_carry_each_records_metadata_across_topics(
    kafka_bootstrap: str, kafka_topic_factory: TopicFactory, client: str
) -> None:
    first = await kafka_topic_factory(partitions=2)
    second = await kafka_topic_factory(partitions=3)
    target = await kafka_topic_factory(partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        sent = {}
        for i in range(200):
            topic = first if i % 2 else second
            key = f"k{i}".encode() if i % 3 else None
            headers = [("n", str(i).encode())] if i % 5 == 0 else []
            meta = await (await producer.send(topic, orjson.dumps({"n": i}), key=key, headers=headers,
                                              timestamp_ms=1_700_000_000_000 + i))
            sent[i] = (topic, meta.partition, meta.offset, key, headers)
    finally:
        await producer.stop()
    keeper: list[KeepContexts] = []

    def processor(app: bspump.BSPumpApplication, pipeline: bspump.Pipeline) -> bspump.Processor:
        keeper.append(KeepContexts(app, pipeline))
        return keeper[0]

    app, pipeline = build_app(kafka_bootstrap, client, {"topics": f"{first},{second}", "group_id": f"{first}-g"},
                              {"topic": target}, processor=processor)
    await run_until(app, lambda: sink_count(pipeline) >= 200, 60, "200 events written")

    contexts = keeper[0].contexts
    assert len(contexts) == 200
    for i, context in enumerate(sorted(contexts, key=lambda c: int(c["timestamp"]))):
        topic, partition, offset, key, headers = sent[i]
        assert (context["topic"], context["partition"], context["offset"]) == (topic, partition, offset)
        assert context["key"] == key
        assert context["timestamp"] == 1_700_000_000_000 + i
        assert list(context["headers"]) == headers


async def test_poison_message_goes_to_dead_letter_topic_and_the_rest_flows(
    kafka_bootstrap: str, kafka_topic_factory: TopicFactory, client: str
) -> None:
    source_topic = await kafka_topic_factory(partitions=2)
    target_topic = await kafka_topic_factory(partitions=2)
    dead_topic = await kafka_topic_factory(partitions=1)
    values = json_values(0, 500)
    values.insert(200, b"{not json")
    await produce(kafka_bootstrap, source_topic, values)
    group = f"{source_topic}-g"
    app, pipeline = build_app(kafka_bootstrap, client, {"topics": source_topic, "group_id": group},
                              {"topic": target_topic}, {"error_policy": "dead-letter"},
                              dead_letter_topic=dead_topic)
    await run_until(app, lambda: sink_count(pipeline) >= 500, 60, "500 events written")

    good = await read_all(kafka_bootstrap, target_topic, 500)
    assert sorted(orjson.loads(r.value)["n"] for r in good) == list(range(500))
    dead = await read_all(kafka_bootstrap, dead_topic, 1)
    assert len(dead) == 1
    letter = dead[0]
    assert letter.value == b"{not json"
    headers = {k: v.decode() for k, v in letter.headers}
    assert headers["error_type"] == "JSONDecodeError"
    assert "JSONDecodeError" in headers["error"]
    assert headers["error_component"] == "KafkaRoundTrip.KafkaSource"
    assert headers["error_pipeline"] == "KafkaRoundTrip"
    assert headers["source_topic"] == source_topic
    assert int(headers["source_offset"]) >= 0
    # The poison message was dead-lettered, so its offset is committed with the rest.
    assert await committed(kafka_bootstrap, group, source_topic, 2) == await end_offsets(
        kafka_bootstrap, source_topic, 2)


async def test_stop_and_restart_mid_stream_loses_nothing(
    kafka_bootstrap: str, kafka_topic_factory: TopicFactory, client: str
) -> None:
    source_topic = await kafka_topic_factory(partitions=3)
    target_topic = await kafka_topic_factory(partitions=3)
    total = 20000
    await produce(kafka_bootstrap, source_topic, json_values(0, 2000))

    async def keep_producing() -> None:
        for start in range(2000, total, 500):
            await produce(kafka_bootstrap, source_topic, json_values(start, start + 500))
            await asyncio.sleep(0.02)

    producing = asyncio.create_task(keep_producing())
    group = f"{source_topic}-g"
    source_config = {"topics": source_topic, "group_id": group, "batch_size": 100}
    first, pipeline = build_app(kafka_bootstrap, client, source_config, {"topic": target_topic},
                                {"max_in_flight": 1000})
    await run_until(first, lambda: sink_count(pipeline) >= 3000, 60, "3000 events written")
    written_first = sink_count(pipeline)
    await producing
    assert written_first < total, "the first run should stop mid-stream"
    mid = await committed(kafka_bootstrap, group, source_topic, 3)
    assert sum(o or 0 for o in mid) == written_first, "a graceful stop commits exactly what was written"

    second, pipeline = build_app(kafka_bootstrap, client, source_config, {"topic": target_topic})
    await run_until(second, lambda: written_first + sink_count(pipeline) >= total, 60, "the rest written")

    records = await read_all(kafka_bootstrap, target_topic, total)
    seen = [orjson.loads(r.value)["n"] for r in records]
    assert set(seen) == set(range(total)), "every message processed at least once"
    duplicates = len(seen) - total
    print(f"[{client}] stop/restart: {written_first} written before the stop, {duplicates} duplicates")
    # A graceful stop commits everything acknowledged: no duplicates at all.
    assert duplicates == 0
    assert await committed(kafka_bootstrap, group, source_topic, 3) == await end_offsets(
        kafka_bootstrap, source_topic, 3)


async def test_offsets_are_committed_only_up_to_the_first_unacknowledged_event(
    kafka_bootstrap: str, kafka_topic_factory: TopicFactory, client: str
) -> None:
    source_topic = await kafka_topic_factory(partitions=1)
    await produce(kafka_bootstrap, source_topic, json_values(0, 1000))
    group = f"{source_topic}-g"
    app, svc = kafka_app(kafka_bootstrap, client)
    pipeline = bspump.Pipeline(app, "Gap", config={"drain_timeout": 1.0})
    sink = HoldingSink(app, pipeline, hold={250})
    pipeline.build(
        bspump.kafka.KafkaSource(app, pipeline, connection="KafkaConnection", config={
            "topics": source_topic, "group_id": group, "format": "json", "batch_size": 50,
            "commit_interval": 0.1}),
        sink,
    )
    svc.add_pipeline(pipeline)
    await run_until(app, lambda: sink.acked >= 999, 60, "999 acknowledgements")
    # Event 250 (offset 250) was never acknowledged: the commit stops at the start of its batch.
    assert await committed(kafka_bootstrap, group, source_topic, 1) == [250]


async def test_source_reports_its_lag(kafka_bootstrap: str, kafka_topic_factory: TopicFactory, client: str) -> None:
    """The source's ``lag`` gauge: records not fetched yet. A sink that acknowledges nothing stops the source
    at max_in_flight, so the lag is what is left in the topic; it also reaches /metrics via the pipeline."""
    source_topic = await kafka_topic_factory(partitions=2)
    total = 3000
    await produce(kafka_bootstrap, source_topic, json_values(0, total))
    app, svc = kafka_app(kafka_bootstrap, client)
    pipeline = bspump.Pipeline(app, "Lag", config={"drain_timeout": 0.5, "max_in_flight": 400})
    sink = HoldingSink(app, pipeline, hold=set(range(total)))
    source = bspump.kafka.KafkaSource(app, pipeline, connection="KafkaConnection", config={
        "topics": source_topic, "group_id": f"{source_topic}-g", "format": "json", "batch_size": 100})
    pipeline.build(source, sink)
    svc.add_pipeline(pipeline)
    task = asyncio.create_task(app.run_async())
    try:
        await wait_for(lambda: pipeline.in_flight >= 400 and not pipeline.ready, 60, "the source throttled")
        ends = dict(enumerate(await end_offsets(kafka_bootstrap, source_topic, 2)))

        def expected_lag() -> int:  # over the partitions read from; the client's watermarks refresh ~1/s
            return sum(ends[partition] - position for (_, partition), position in source._fetched.items())

        await wait_for(lambda: source.gauges().get("lag") == expected_lag(), 10, "the lag")
        gauges = pipeline.metrics()["components"]["KafkaSource"]["gauges"]
        assert gauges["partitions"] == 2
        assert gauges["partitions_unread"] == 2 - len(source._fetched)
        assert 0 < gauges["lag"] == expected_lag() < total
        print(f"[{client}] lag {gauges['lag']:.0f} after {source.records_fetched} fetched, "
              f"{gauges['partitions_unread']:.0f} partitions not read yet")
    finally:
        app.stop()
        await asyncio.wait_for(task, 60)


class GateSink(bspump.Sink):
    """Acknowledges nothing until ``gate`` is set, then everything (held batches first)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()
        self.held: list[bspump.Batch] = []
        self.acked = 0
        self._releaser: asyncio.Task[None] | None = None

    def put(self, batch: bspump.Batch) -> None:
        if self.gate.is_set():
            self._ack(batch)
        else:
            self.held.append(batch)

    def _ack(self, batch: bspump.Batch) -> None:
        self.acked += len(batch)
        batch.delivery.ack(len(batch))

    def release(self) -> None:
        self.gate.set()
        held, self.held = self.held, []
        for batch in held:
            self._ack(batch)


async def test_a_throttled_source_stays_in_its_group(
    kafka_bootstrap: str, kafka_topic_factory: TopicFactory, client: str
) -> None:
    """Backpressure longer than max_poll_interval_ms: the source keeps polling (paused), so the member is
    not dropped from the group and nothing is revoked; once the sink moves again everything flows."""
    source_topic = await kafka_topic_factory(partitions=3)
    total = 3000
    await produce(kafka_bootstrap, source_topic, json_values(0, total))
    group = f"{source_topic}-g"
    app, svc = kafka_app(kafka_bootstrap, client)
    pipeline = bspump.Pipeline(app, "Throttled", config={"max_in_flight": 200})
    sink = GateSink(app, pipeline)
    source = bspump.kafka.KafkaSource(app, pipeline, connection="KafkaConnection", config={
        "topics": source_topic, "group_id": group, "format": "json", "batch_size": 100,
        "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000, "max_poll_interval_ms": 6000})
    pipeline.build(source, sink)
    svc.add_pipeline(pipeline)
    task = asyncio.create_task(app.run_async())
    try:
        await wait_for(lambda: not pipeline.ready, 60, "the source throttled")
        await asyncio.sleep(10)  # well past max_poll_interval_ms
        assert source.revocations == 0, "the member left its group while throttled"
        sink.release()
        await wait_for(lambda: sink.acked >= total, 60, "every event acknowledged")
        assert source.revocations == 0
    finally:
        app.stop()
        await asyncio.wait_for(task, 60)
    assert sink.acked == total  # nothing fetched twice
    assert await committed(kafka_bootstrap, group, source_topic, 3) == await end_offsets(
        kafka_bootstrap, source_topic, 3)


# -- scale-out: two processes in one group ---------------------------------------------------------------


class MarkWorker(bspump.Processor):
    """Records which process handled the event and where it was read, so the test sees the partitions being
    shared and can tell which source offsets were delivered twice."""

    def process(self, context: bspump.Context, event: Any) -> Any:
        event["worker"] = os.getpid()
        event["from"] = [context["partition"], context["offset"]]
        return event


def run_worker(bootstrap: str, client: str, source_topic: str, target_topic: str, group: str) -> int:
    """A group member in a process of its own (``python test_kafka.py worker ...``)."""
    app, _ = build_app(bootstrap, client, {"topics": source_topic, "group_id": group, "batch_size": 200,
                                           "commit_interval": 0.5, "session_timeout_ms": 6000,
                                           "heartbeat_interval_ms": 1000},
                       {"topic": target_topic}, {"max_in_flight": 2000},
                       processor=lambda app, pipeline: MarkWorker(app, pipeline), pipeline_id="GroupWorker")
    return app.run()


def start_worker(bootstrap: str, client: str, source_topic: str, target_topic: str, group: str,
                 log_path: str) -> subprocess.Popen[bytes]:
    log_file = open(log_path, "wb")
    return subprocess.Popen(
        [sys.executable, __file__, "worker", bootstrap, client, source_topic, target_topic, group],
        stdout=log_file, stderr=subprocess.STDOUT, cwd=os.path.dirname(__file__),
    )


@pytest.mark.timeout(240)
async def test_two_processes_share_partitions_and_survive_sigkill(
    kafka_bootstrap: str, kafka_topic_factory: TopicFactory, client: str, tmp_path: Any
) -> None:
    source_topic = await kafka_topic_factory(partitions=4)
    target_topic = await kafka_topic_factory(partitions=4)
    group = f"{source_topic}-g"
    total = 30000
    workers = [start_worker(kafka_bootstrap, client, source_topic, target_topic, group, str(tmp_path / f"w{i}.log"))
               for i in range(2)]
    try:
        async def keep_producing() -> None:
            for start in range(0, total, 500):
                await produce(kafka_bootstrap, source_topic, json_values(start, start + 500))
                await asyncio.sleep(0.1)

        producing = asyncio.create_task(keep_producing())
        # Both members must take part before one of them is killed.
        deadline = time.monotonic() + 90
        pids: set[int] = set()
        while time.monotonic() < deadline:
            records = await read_all(kafka_bootstrap, target_topic, 1, timeout=2, settle=0.2)
            pids = {orjson.loads(r.value)["worker"] for r in records}
            if len(pids) == 2 and len(records) > 3000:
                break
        assert pids == {w.pid for w in workers}, f"the partitions were not shared: {pids}"
        victim, survivor = workers
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        # What the group had committed when the victim died (its partitions move only after the session
        # timeout): the survivor re-reads the victim's partitions from here.
        at_kill = await committed(kafka_bootstrap, group, source_topic, 4)
        await producing

        records = await read_all(kafka_bootstrap, target_topic, total, timeout=120, settle=3)
        events = [orjson.loads(r.value) for r in records]
        seen = [e["n"] for e in events]
        missing = set(range(total)) - set(seen)
        counts: dict[int, int] = {}
        for n in seen:
            counts[n] = counts.get(n, 0) + 1
        repeated = [e for e in events if counts[e["n"]] > 1]
        duplicates = len(seen) - len(set(seen))
        print(f"[{client}] group of two, one SIGKILLed: {len(seen)} written, {duplicates} duplicates "
              f"(the victim's unacknowledged or uncommitted window), {len(missing)} missing; "
              f"committed at the kill: {at_kill}")
        assert not missing, f"{len(missing)} messages lost, e.g. {sorted(missing)[:10]}"
        # At least once, and no more than the window: nothing read before the last commit is read again.
        before_commit = [e for e in repeated if e["from"][1] < (at_kill[e["from"][0]] or 0)]
        assert not before_commit, f"redelivered from before the committed offset: {before_commit[:5]}"
        survivor.send_signal(signal.SIGTERM)
        assert survivor.wait(60) == 0
        assert await committed(kafka_bootstrap, group, source_topic, 4) == await end_offsets(
            kafka_bootstrap, source_topic, 4)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


# -- broker restart ----------------------------------------------------------------------------------------


@pytest.mark.server_control
@pytest.mark.timeout(300)
async def test_broker_restart_mid_stream_loses_nothing(
    kafka_bootstrap: str, kafka_topic_factory: TopicFactory, client: str, server_control: Any
) -> None:
    source_topic = await kafka_topic_factory(partitions=2)
    target_topic = await kafka_topic_factory(partitions=2)
    group = f"{source_topic}-g"
    first = 5000
    await produce(kafka_bootstrap, source_topic, json_values(0, first))
    app, pipeline = build_app(kafka_bootstrap, client, {"topics": source_topic, "group_id": group,
                                                        "batch_size": 100},
                              {"topic": target_topic}, {"max_in_flight": 1000})
    task = asyncio.create_task(app.run_async())
    try:
        await wait_for(lambda: sink_count(pipeline) >= 1000 or task.done(), 60, "1000 events written")
        await asyncio.to_thread(server_control.restart, "kafka")
        await produce(kafka_bootstrap, source_topic, json_values(first, first + 1000))
        await wait_for(lambda: sink_count(pipeline) >= first + 1000 or task.done(), 180,
                         "every event written after the restart")
        assert not task.done(), "the application stopped instead of reconnecting"
    finally:
        app.stop()
        await asyncio.wait_for(task, 120)
    records = await read_all(kafka_bootstrap, target_topic, first + 1000)
    seen = [orjson.loads(r.value)["n"] for r in records]
    assert set(seen) == set(range(first + 1000))
    print(f"[{client}] broker restart: {len(seen) - len(set(seen))} duplicates, "
          f"{pipeline.sink.resent if isinstance(pipeline.sink, bspump.kafka.KafkaSink) else 0} events resent")



# -- the seed page's examples ---------------------------------------------------------------------------


async def test_seed_page_example_runs_as_written(
    kafka_bootstrap: str, kafka_topic_factory: TopicFactory, client: str, tmp_path: Any
) -> None:
    """examples/kafka/app.py holds the seed page's Kafka snippets verbatim; run it as a process."""
    source_topic = await kafka_topic_factory(partitions=2)
    target_topic = await kafka_topic_factory(partitions=2)
    await produce(kafka_bootstrap, source_topic, [f"m{i}".encode() for i in range(100)])
    example = os.path.join(os.path.dirname(__file__), "..", "examples", "kafka")
    conf = tmp_path / "pipelines.conf"
    conf.write_text(open(os.path.join(example, "pipelines.conf")).read().replace(
        "# client=confluent", f"client={client}"))
    env = {**os.environ, "BSPUMP_TEST_KAFKA": kafka_bootstrap, "EXAMPLE_INPUT_TOPIC": source_topic,
           "EXAMPLE_OUTPUT_TOPIC": target_topic, "BSPUMP_CONFIG": str(conf)}
    process = subprocess.Popen([sys.executable, "app.py"], cwd=example, env=env)
    try:
        records = await read_all(kafka_bootstrap, target_topic, 100, timeout=60)
        assert sorted(r.value for r in records) == sorted(f"m{i}".encode() for i in range(100))
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_seed_page_jupyter_registration_runs_as_written() -> None:
    from bspump import jupyter

    jupyter.reset()
    namespace: dict[str, Any] = {}
    exec(  # the snippet of the seed page, as written
        "from bspump.jupyter import *\n"
        "import bspump.kafka\n"
        "@register_connection\n"
        "def kafka_connection(app):\n"
        "    return bspump.kafka.KafkaConnection(app, \"KafkaConnection\")\n",
        namespace,
    )
    connection = namespace["kafka_connection"]
    assert isinstance(connection, bspump.kafka.KafkaConnection)
    assert jupyter.get_app().pump_service.locate_connection("KafkaConnection") is connection
    jupyter.reset()


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "worker":
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(message)s")
    sys.exit(run_worker(*sys.argv[2:7]))


@pytest.mark.parametrize("with_headers", [False, True])
async def test_confluent_producer_waits_for_room_when_librdkafkas_queue_is_full(
    kafka_bootstrap: str, kafka_topic_factory: TopicFactory, with_headers: bool
) -> None:
    """produce_batch (no headers) and produce per record (headers) both retry what a full queue refused."""
    from bspump.kafka.backend import OutBatch
    from bspump.kafka.codec import encode_auto
    from bspump.kafka.confluent_producer import ConfluentProducer
    from bspump.kafka.options import ClientOptions, ProducerSettings

    topic = await kafka_topic_factory(partitions=2)
    producer = ConfluentProducer(ClientOptions(bootstrap_servers=(kafka_bootstrap,)), ProducerSettings())
    producer._conf["queue.buffering.max.messages"] = 50  # room for a tenth of one call
    await producer.start()
    reports: list[list[tuple[int, BaseException]]] = []
    try:
        events: list[Any] = [{"n": i} for i in range(500)]
        headers = [[("n", str(i).encode())] for i in range(500)] if with_headers else None
        await producer.send(OutBatch(topic, events, headers=headers, encode=encode_auto), reports.append)
        await wait_for(lambda: bool(reports), 30, "every delivery report")
    finally:
        await producer.close()
    assert reports == [[]]
    records = await read_all(kafka_bootstrap, topic, 500)
    assert sorted(orjson.loads(r.value)["n"] for r in records) == list(range(500))


async def test_confluent_producer_isolates_values_that_do_not_encode_and_learns_new_topics(
    kafka_bootstrap: str, kafka_topic_factory: TopicFactory
) -> None:
    """A value orjson refuses fails alone (the batch falls back to produce per record); a topic created after
    the producer started is looked up in the background, and its unkeyed records then go one partition a call."""
    from bspump.kafka.backend import OutBatch
    from bspump.kafka.codec import encode_auto
    from bspump.kafka.confluent_producer import ConfluentProducer
    from bspump.kafka.options import ClientOptions, ProducerSettings

    producer = ConfluentProducer(ClientOptions(bootstrap_servers=(kafka_bootstrap,)), ProducerSettings())
    await producer.start()
    topic = await kafka_topic_factory(partitions=3)  # created after the producer read the cluster's metadata
    reports: list[list[tuple[int, BaseException]]] = []
    try:
        events: list[Any] = [{"n": i} for i in range(10)]
        events[4] = {"n": 4, "bad": object()}  # not JSON
        await producer.send(OutBatch(topic, events, encode=encode_auto), reports.append)
        await wait_for(lambda: len(reports) == 1, 30, "the first call's reports")
        await wait_for(lambda: producer._partitions.next(topic, 0.0) is not None, 10, "the topic's partitions")
        for _ in range(3):
            await producer.send(OutBatch(topic, [{"n": 100}] * 5, encode=encode_auto), reports.append)
        await wait_for(lambda: len(reports) == 4, 30, "every report")
    finally:
        await producer.close()
    assert [index for index, _ in reports[0]] == [4]
    assert isinstance(reports[0][0][1], TypeError) and "object" in str(reports[0][0][1])
    assert reports[1:] == [[], [], []]
    records = await read_all(kafka_bootstrap, topic, 24)
    assert sorted(orjson.loads(r.value)["n"] for r in records) == [0, 1, 2, 3, 5, 6, 7, 8, 9] + [100] * 15
    later = [r for r in records if orjson.loads(r.value)["n"] == 100]
    by_partition: dict[int, int] = {}
    for r in later:
        by_partition[r.partition] = by_partition.get(r.partition, 0) + 1
    assert sorted(by_partition.values()) == [5, 5, 5]  # one partition per call, rotating


async def test_confluent_producer_recovers_when_a_topic_is_recreated_with_fewer_partitions(
    kafka_bootstrap: str, kafka_topic_factory: TopicFactory
) -> None:
    """A partition chosen from stale metadata fails as transient (the sink sends it again) and the topic is
    looked up anew, so the next calls use the partitions it has now."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from bspump.kafka.backend import OutBatch
    from bspump.kafka.codec import encode_auto
    from bspump.kafka.confluent_backend import BACKEND
    from bspump.kafka.confluent_producer import ConfluentProducer
    from bspump.kafka.options import ClientOptions, ProducerSettings

    topic = await kafka_topic_factory(partitions=3)
    producer = ConfluentProducer(ClientOptions(bootstrap_servers=(kafka_bootstrap,)), ProducerSettings())
    await producer.start()
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    reports: list[list[tuple[int, BaseException]]] = []
    try:
        assert producer._partitions.next(topic, 0.0) is not None  # known from the start: 3 partitions
        await admin.delete_topics([topic])
        deadline = time.monotonic() + 30
        while True:  # deletion completes asynchronously on the broker
            try:
                await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        for n in range(3):  # the rotation reaches partitions 1 and 2, which are gone
            await producer.send(OutBatch(topic, [{"n": n}], encode=encode_auto), reports.append)
        await wait_for(lambda: len(reports) == 3, 30, "three calls settled")
        failed = [error for report in reports for _, error in report]
        assert failed and all(BACKEND.classify(error) is bspump.ErrorKind.TRANSIENT for error in failed)
        await producer.send(OutBatch(topic, [{"n": 9}], encode=encode_auto), reports.append)  # looks it up
        await wait_for(lambda: producer._partitions.next(topic, 0.0) == 0, 10, "the topic looked up anew")
        await producer.send(OutBatch(topic, [{"n": 10}], encode=encode_auto), reports.append)
        await wait_for(lambda: len(reports) == 5, 30, "the last calls settled")
    finally:
        await producer.close()
        await admin.close()
    assert reports[3:] == [[], []]
