"""Smoke test of an installed bspump-kafka wheel (run by ``nox -s wheel_install``, not by pytest).

Runs in a venv holding only bspump-core and bspump-kafka from their wheels: a pipeline writes events to a
new topic through ``KafkaSink``, a second reads them back through ``KafkaSource``, and both must agree.
It needs a broker (``BSPUMP_TEST_KAFKA``, default 127.0.0.1:9092); without one it exits 77 (skipped).
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
import uuid

import bspump
import bspump.kafka

SKIPPED = 77
EVENTS = [{"order": n, "item": f"item-{n}"} for n in range(50)]


def answers(address: str) -> bool:
    """Whether something listens at ``host:port``."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


def application(bootstrap: str) -> bspump.BSPumpApplication:
    app = bspump.BSPumpApplication(load_plugins=False)
    app.get_service("bspump.PumpService").add_connection(
        bspump.kafka.KafkaConnection(app, "KafkaConnection", config={"bootstrap_servers": bootstrap}))
    return app


async def write(bootstrap: str, topic: str) -> None:
    app = application(bootstrap)
    pipeline = bspump.Pipeline(app, "Write")
    pipeline.build(bspump.MemorySource(app, pipeline, events=list(EVENTS)),
                   bspump.kafka.KafkaSink(app, pipeline, config={"topic": topic}))
    app.get_service("bspump.PumpService").add_pipeline(pipeline)
    assert await app.run_async() == 0, "the writing pipeline failed"
    assert pipeline.metrics()["out"] == len(EVENTS), pipeline.metrics()


async def read(bootstrap: str, topic: str) -> list[object]:
    app = application(bootstrap)
    pipeline = bspump.Pipeline(app, "Read")
    sink = bspump.MemorySink(app, pipeline)
    pipeline.build(bspump.kafka.KafkaSource(app, pipeline, config={"topics": topic, "group_id": f"{topic}-smoke",
                                                                   "format": "json"}), sink)
    app.get_service("bspump.PumpService").add_pipeline(pipeline)
    running = asyncio.create_task(app.run_async())
    deadline = time.monotonic() + 60
    while len(sink.events) < len(EVENTS) and time.monotonic() < deadline and not running.done():
        await asyncio.sleep(0.05)
    app.stop()
    assert await running == 0, "the reading pipeline failed"
    return list(sink.events)


async def main() -> int:
    bootstrap = os.environ.get("BSPUMP_TEST_KAFKA", "127.0.0.1:9092").split(",")[0]
    if not answers(bootstrap):
        print(f"skipped: no Kafka broker answers at {bootstrap} (BSPUMP_TEST_KAFKA)")
        return SKIPPED
    print(f"bspump {bspump.__version__} from {os.path.dirname(bspump.__file__)}")
    print(f"bspump.kafka from {os.path.dirname(bspump.kafka.__file__)}")
    topic = f"bspump-smoke-install-{uuid.uuid4().hex[:8]}"
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
        await write(bootstrap, topic)
        received = await read(bootstrap, topic)
    finally:
        try:
            await admin.delete_topics([topic])
        finally:
            await admin.close()
    ordered = sorted(received, key=lambda event: event["order"])  # type: ignore[index]
    if ordered != EVENTS:
        print(f"error: wrote {len(EVENTS)} events, read back {len(received)} that differ", file=sys.stderr)
        return 1
    print(f"ok: {len(EVENTS)} events through KafkaSink and back through KafkaSource ({topic})")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
