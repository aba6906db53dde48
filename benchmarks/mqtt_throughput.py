"""MQTT throughput: bspump's MQTTSink and MQTTSource against hand-written aiomqtt loops, same broker, same run.

- Sink: events -> MQTTSink (QoS 1, every event acknowledged on its PUBACK, ``max_unconfirmed`` publications
  in flight) against an aiomqtt publish loop that keeps the same number of QoS 1 publications in flight
  (one task per publication, as aiomqtt's awaitable ``publish`` asks for).
- Source: broker -> MQTTSource (QoS 1, each message acknowledged after the null sink acknowledged it, in
  order) -> NullSink, against ``async for message in client.messages`` (aiomqtt acknowledging on receipt).
  Both read the same number of messages queued beforehand in a persistent session of their own.

Payloads are JSON of ~100 bytes. Each contestant runs ``--rounds`` times, interleaved; the best run counts.

    python benchmarks/mqtt_throughput.py [--messages 20000] [--in-flight 1000] [--rounds 3]

The broker is found through BSPUMP_TEST_MQTT (default 127.0.0.1:1883). The last line printed is JSON:
``{"bspump_eps", "baseline_eps", "ratio", "source_eps", "source_baseline_eps", "source_ratio", ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable

import aiomqtt
import orjson
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import bspump
import bspump.mqtt
from bspump.embedded.memory import NullSink
from bspump.testing import make_app

PAYLOAD_PAD = "x" * 80


def broker() -> tuple[str, int]:
    host, _, port = os.environ.get("BSPUMP_TEST_MQTT", "127.0.0.1:1883").rpartition(":")
    return host or "127.0.0.1", int(port or 1883)


def client(identifier: str | None = None, persistent: bool = False) -> aiomqtt.Client:
    host, port = broker()
    properties = Properties(PacketTypes.CONNECT)
    if persistent:
        properties.SessionExpiryInterval = 300
    return aiomqtt.Client(host, port, identifier=identifier, protocol=aiomqtt.ProtocolVersion.V5,
                          clean_start=not persistent, properties=properties, max_inflight_messages=65535)


def payload(n: int) -> bytes:
    return orjson.dumps({"n": n, "pad": PAYLOAD_PAD})


# -- sink ----------------------------------------------------------------------------------------------------
class EventSource(bspump.Source):
    def __init__(self, *args: object, count: int, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.count = count

    async def main(self) -> None:
        for start in range(0, self.count, 500):
            await self.emit([{"n": n, "pad": PAYLOAD_PAD} for n in range(start, min(start + 500, self.count))])


async def bspump_sink(count: int, in_flight: int) -> float:
    host, port = broker()
    app = make_app()
    connection = bspump.mqtt.MQTTConnection(app, "MQTTConnection", config={
        "host": host, "port": port, "clean_start": True, "max_inflight": 65535})
    app.pump_service.add_connection(connection)
    pipeline = bspump.Pipeline(app, "Bench", config={"max_in_flight": max(in_flight * 2, 1000)})
    pipeline.build(EventSource(app, pipeline, count=count),
                   bspump.mqtt.MQTTSink(app, pipeline, config={
                       "topic": f"bench/{uuid.uuid4().hex}", "qos": 1, "max_unconfirmed": in_flight}))
    app.pump_service.add_pipeline(pipeline)
    await connection.open()
    await connection.wait_ready(10)
    start = time.perf_counter()
    assert await app.run_async() == 0
    elapsed = time.perf_counter() - start
    assert pipeline.metrics()["out"] == count
    return elapsed


async def baseline_sink(count: int, in_flight: int) -> float:
    topic = f"bench/{uuid.uuid4().hex}"
    async with client() as publisher:
        publisher.pending_calls_threshold = 1 << 30
        start = time.perf_counter()
        slots = asyncio.Semaphore(in_flight)

        async def one(n: int) -> None:
            try:
                await publisher.publish(topic, payload(n), qos=1)
            finally:
                slots.release()

        tasks = []
        for n in range(count):
            await slots.acquire()
            tasks.append(asyncio.create_task(one(n)))
        await asyncio.gather(*tasks)
        return time.perf_counter() - start


# -- source --------------------------------------------------------------------------------------------------
async def queue_messages(identifier: str, topic: str, count: int) -> None:
    """A persistent session subscribed to ``topic``, with ``count`` messages queued for it."""
    async with client(identifier, persistent=True) as subscriber:
        await subscriber.subscribe(topic, qos=1)
    async with client() as publisher:
        publisher.pending_calls_threshold = 1 << 30
        for start in range(0, count, 1000):
            await asyncio.gather(*(publisher.publish(topic, payload(n), qos=1)
                                   for n in range(start, min(start + 1000, count))))


async def bspump_source(count: int, _: int) -> float:
    identifier, topic = f"bench-src-{uuid.uuid4().hex[:10]}", f"bench/{uuid.uuid4().hex}"
    await queue_messages(identifier, topic, count)
    host, port = broker()
    app = make_app()
    connection = bspump.mqtt.MQTTConnection(app, "MQTTConnection", config={
        "host": host, "port": port, "client_id": identifier, "session_expiry": 300})
    app.pump_service.add_connection(connection)
    pipeline = bspump.Pipeline(app, "Bench")
    source = bspump.mqtt.MQTTSource(app, pipeline, config={"topics": topic, "qos": 1})
    pipeline.build(source, NullSink(app, pipeline))
    app.pump_service.add_pipeline(pipeline)
    start = time.perf_counter()
    running = asyncio.create_task(app.run_async())
    while source.acknowledged < count:
        await asyncio.sleep(0.002)
    elapsed = time.perf_counter() - start
    app.stop()
    await running
    return elapsed


async def baseline_source(count: int, _: int) -> float:
    identifier, topic = f"bench-src-{uuid.uuid4().hex[:10]}", f"bench/{uuid.uuid4().hex}"
    await queue_messages(identifier, topic, count)
    start = time.perf_counter()
    received = 0
    async with client(identifier, persistent=True) as subscriber:
        await subscriber.subscribe(topic, qos=1)
        async for _message in subscriber.messages:
            received += 1
            if received == count:
                break
        return time.perf_counter() - start


Contestant = Callable[[int, int], Awaitable[float]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--in-flight", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    contestants: dict[str, Contestant] = {"bspump sink": bspump_sink, "aiomqtt publish loop": baseline_sink,
                                          "bspump source": bspump_source, "aiomqtt subscribe loop": baseline_source}
    best: dict[str, float] = {}
    for round_no in range(args.rounds):
        for label, run in contestants.items():
            elapsed = asyncio.run(run(args.messages, args.in_flight))
            eps = args.messages / elapsed
            best[label] = max(best.get(label, 0.0), eps)
            print(f"{label + f' #{round_no + 1}':<28} {args.messages:>8} messages in {elapsed:6.2f} s = "
                  f"{eps:>9,.0f}/s", flush=True)
    result = {
        "messages": args.messages, "in_flight": args.in_flight, "rounds": args.rounds,
        "bspump_eps": round(best["bspump sink"]), "baseline_eps": round(best["aiomqtt publish loop"]),
        "ratio": round(best["bspump sink"] / best["aiomqtt publish loop"], 3),
        "source_eps": round(best["bspump source"]), "source_baseline_eps": round(best["aiomqtt subscribe loop"]),
        "source_ratio": round(best["bspump source"] / best["aiomqtt subscribe loop"], 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
