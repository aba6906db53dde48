"""bspump-mqtt against the real Mosquitto: round trips at every QoS with wildcards, shared subscriptions
split between two pump processes, a SIGKILLed pump and a restarted broker losing nothing at QoS 1, and a
slow sink that keeps memory flat and the connection alive."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiomqtt
import orjson
import pytest
from mqtt_support import Collector, ReliablePublisher, publish_all
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import bspump
import bspump.mqtt
from bspump.embedded.memory import MemorySink
from bspump.testing import SlowSink, make_app, wait_for

if TYPE_CHECKING:
    from conftest import Address, ServerControl

pytestmark = [pytest.mark.mqtt]

PUMP = Path(__file__).parent / "mqtt_pump.py"


def _connection(app: bspump.BSPumpApplication, address: Address, **config: Any) -> bspump.mqtt.MQTTConnection:
    connection = bspump.mqtt.MQTTConnection(app, "MQTTConnection", config={
        "host": address.host, "port": address.port, "client_id": f"it-{uuid.uuid4().hex[:12]}",
        "session_expiry": 120, "reconnect_initial": 0.05, "reconnect_max": 0.5, "reconnect_jitter": 0.0,
        **config})
    app.get_service("bspump.PumpService").add_connection(connection)
    return connection


class Describe(bspump.Processor):
    """Puts what the source said about each message into the event, so that the far end can check it."""

    def process(self, context: dict[str, Any], event: Any) -> Any:
        return {**event, "topic": context["topic"], "qos": context["qos"], "retain": context["retain"],
                "mid": context["mid"], "properties": context.get("properties")}


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_round_trip_with_wildcards_at_every_qos(mqtt_address: Address, mqtt_topic_prefix: str,
                                                      protocol: str) -> None:
    p = mqtt_topic_prefix
    app = make_app()
    connection = _connection(app, mqtt_address, protocol=protocol)
    for qos in (0, 1, 2):
        pipeline = bspump.Pipeline(app, f"Q{qos}")
        pipeline.build(
            bspump.mqtt.MQTTSource(app, pipeline, config={
                "topics": f"{p}q{qos}/+/telemetry, {p}q{qos}/alerts/#", "qos": qos, "payload": "json"}),
            Describe(app, pipeline),
            bspump.mqtt.MQTTSink(app, pipeline, config={"topic": p + "out/{q}/{n}", "qos": qos}),
        )
        app.pump_service.add_pipeline(pipeline)
    published: dict[tuple[int, int], str] = {}
    async with Collector(mqtt_address.host, mqtt_address.port, [f"{p}out/#"], qos=2) as collector:
        running = asyncio.create_task(app.run_async())
        await connection.wait_ready(10)
        async with aiomqtt.Client(mqtt_address.host, mqtt_address.port,
                                  protocol=aiomqtt.ProtocolVersion.V5) as publisher:
            for qos in (0, 1, 2):
                for n in range(60):
                    topic = f"{p}q{qos}/dev{n % 3}/telemetry" if n % 2 else f"{p}q{qos}/alerts/{n % 4}/deep/er"
                    published[(qos, n)] = topic
                    properties = None
                    if n == 1:
                        properties = Properties(PacketTypes.PUBLISH)
                        properties.UserProperty = [("site", "plant-7")]
                    await publisher.publish(topic, orjson.dumps({"n": n, "q": qos}), qos=qos, properties=properties)
                # Matches no filter: + is one level, and "other" is not "telemetry".
                await publisher.publish(f"{p}q{qos}/dev1/extra/telemetry", b'{"n": -1, "q": 9}', qos=qos)
                await publisher.publish(f"{p}q{qos}/dev1/other", b'{"n": -1, "q": 9}', qos=qos)
        await wait_for(lambda: len(collector.messages) >= 180, 30, what="180 events round-tripped")
        app.stop()
        assert await asyncio.wait_for(running, 30) == 0
    events = [json.loads(payload) for _, payload in collector.messages]
    assert sorted((e["q"], e["n"]) for e in events) == sorted(published), "lost, duplicated or unmatched events"
    for event in events:
        assert event["topic"] == published[(event["q"], event["n"])]
        assert event["qos"] == event["q"] and event["retain"] is False
        assert (event["mid"] > 0) == (event["q"] > 0)
        if protocol == "5" and event["n"] == 1:
            assert event["properties"]["UserProperty"] == [["site", "plant-7"]]
    assert connection.unrouted == 0


async def test_undecodable_payload_is_dead_lettered_and_acknowledged(mqtt_address: Address,
                                                                     mqtt_topic_prefix: str) -> None:
    app = make_app()
    connection = _connection(app, mqtt_address)
    pipeline = bspump.Pipeline(app, "Decode", config={"error_policy": "dead-letter"})
    source = bspump.mqtt.MQTTSource(app, pipeline, config={"topics": f"{mqtt_topic_prefix}#", "payload": "json"})
    sink = MemorySink(app, pipeline, id="Out")
    letters = MemorySink(app, pipeline, id="DeadLetter")
    pipeline.build(source, sink, dead_letter=letters)
    app.pump_service.add_pipeline(pipeline)
    running = asyncio.create_task(app.run_async())
    await connection.wait_ready(10)
    await publish_all(mqtt_address.host, mqtt_address.port, [
        (f"{mqtt_topic_prefix}a", b'{"ok": 1}'), (f"{mqtt_topic_prefix}b", b"{not json"),
        (f"{mqtt_topic_prefix}c", b'{"ok": 2}')])
    await wait_for(lambda: len(sink.events) == 2 and len(letters.events) == 1 and source.acknowledged == 3, 10,
                   what="two events written, one dead-lettered, all three acknowledged to the broker")
    app.stop()
    await asyncio.wait_for(running, 30)
    assert letters.events == [b"{not json"]
    assert letters.contexts[0]["topic"] == f"{mqtt_topic_prefix}b" and "JSON" in letters.contexts[0]["error"]


async def _start_pump(args: list[str], log: Path) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(PUMP), *args, stdout=asyncio.subprocess.PIPE, stderr=log.open("ab"),
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 30)
    assert line == b"ready\n", f"the pump did not start: {line!r}; see {log}: {log.read_text()[-2000:]}"
    return process


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 20)
        except TimeoutError:
            process.kill()
            await process.wait()


async def test_two_pump_processes_split_a_shared_subscription(mqtt_address: Address, mqtt_topic_prefix: str,
                                                               tmp_path: Path) -> None:
    p, count = mqtt_topic_prefix, 600
    group = f"g{uuid.uuid4().hex[:8]}"
    host, port = mqtt_address.host, str(mqtt_address.port)
    async with Collector(mqtt_address.host, mqtt_address.port, [f"{p}out/#"]) as collector:
        pumps = [await _start_pump([host, port, f"share-{name}-{group}", f"$share/{group}/{p}in/#", f"{p}out/{name}",
                                    "1"], tmp_path / f"{name}.log") for name in ("A", "B")]
        try:
            await publish_all(mqtt_address.host, mqtt_address.port,
                              ((f"{p}in/{n % 7}/{n}", str(n).encode()) for n in range(count)))
            await wait_for(lambda: len({payload for _, payload in collector.messages}) == count, 30,
                           what=f"all {count} messages through the two pumps")
        finally:
            for pump in pumps:
                await _stop(pump)
    per_pump = collections.Counter(topic.rsplit("/", 1)[1] for topic, _ in collector.messages)
    print(f"\nshared subscription: {dict(per_pump)} of {count}, {len(collector.messages) - count} duplicates")
    assert per_pump["A"] > 0 and per_pump["B"] > 0, f"one pump got everything: {per_pump}"
    assert len(collector.messages) == count, "a message was delivered to both pumps"


async def test_pump_sigkilled_mid_stream_loses_nothing(mqtt_address: Address, mqtt_topic_prefix: str,
                                                       tmp_path: Path) -> None:
    p, count = mqtt_topic_prefix, 2000
    host, port = mqtt_address.host, str(mqtt_address.port)
    args = [host, port, f"kill-{uuid.uuid4().hex[:10]}", f"{p}in/#", f"{p}out", "1", "0.02"]
    expected = {str(n).encode() for n in range(count)}
    received = lambda: {payload for _, payload in collector.messages}  # noqa: E731
    async with Collector(mqtt_address.host, mqtt_address.port, [f"{p}out"]) as collector:
        pump = await _start_pump(args, tmp_path / "first.log")
        publisher = ReliablePublisher(mqtt_address.host, mqtt_address.port, f"{p}in/", count, window=10, pause=0.01)
        publishing = asyncio.create_task(publisher.run())
        await wait_for(lambda: len(collector.messages) >= 300, 30, what="300 messages through the pump")
        pump.send_signal(signal.SIGKILL)
        await pump.wait()
        at_kill = publisher.confirmed
        await wait_for(lambda: publisher.confirmed >= min(count, at_kill + 300), 30,
                       what="300 messages published while no pump runs")
        during_outage = publisher.confirmed - at_kill
        pump = await _start_pump(args, tmp_path / "second.log")
        try:
            await asyncio.wait_for(publishing, 60)
            await wait_for(lambda: received() == expected, 60, what=f"all {count} messages delivered")
        finally:
            await _stop(pump)
    duplicates = len(collector.messages) - count
    print(f"\nSIGKILL: {count} delivered, {during_outage} published during the outage, {duplicates} duplicates")
    second_log = (tmp_path / "second.log").read_text()
    assert "holds no session" not in second_log, "the persistent session did not resume after the kill"


@pytest.mark.server_control
async def test_broker_restart_mid_stream_loses_nothing_at_qos1(mqtt_address: Address, mqtt_topic_prefix: str,
                                                               server_control: ServerControl) -> None:
    p, count = mqtt_topic_prefix, 3000
    app = make_app()
    connection = _connection(app, mqtt_address, keepalive=5)
    pipeline = bspump.Pipeline(app, "Restart", config={"max_in_flight": 500})
    sink = bspump.mqtt.MQTTSink(app, pipeline, config={"topic": f"{p}out", "qos": 1, "format": "bytes"})
    pipeline.build(bspump.mqtt.MQTTSource(app, pipeline, config={"topics": f"{p}in/#", "qos": 1}), sink)
    app.pump_service.add_pipeline(pipeline)
    expected = {str(n).encode() for n in range(count)}
    async with Collector(mqtt_address.host, mqtt_address.port, [f"{p}out"]) as collector:
        running = asyncio.create_task(app.run_async())
        await connection.wait_ready(10)
        publisher = ReliablePublisher(mqtt_address.host, mqtt_address.port, f"{p}in/", count, window=20,
                                      pause=0.005)
        publishing = asyncio.create_task(publisher.run())
        await wait_for(lambda: len(collector.messages) >= 500, 30, what="500 messages through the pump")
        started = time.monotonic()
        await asyncio.to_thread(server_control.restart, "mosquitto")
        restart_seconds = time.monotonic() - started
        await asyncio.wait_for(publishing, 60)
        await wait_for(lambda: {payload for _, payload in collector.messages} == expected, 60,
                       what=f"all {count} messages delivered after the broker restart")
        app.stop()
        assert await asyncio.wait_for(running, 30) == 0
    duplicates = len(collector.messages) - count
    print(f"\nbroker restart ({restart_seconds:.1f}s): {count} delivered, {duplicates} duplicates, "
          f"{sink.resent} resent by the sink, {connection.connect_count} connects, session resumed: "
          f"{connection.session_present}")
    assert connection.connect_count >= 2 and connection.session_present


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_slow_sink_keeps_memory_flat_and_the_connection_alive(mqtt_address: Address,
                                                                    mqtt_topic_prefix: str) -> None:
    """A sink taking 50 ms per batch behind 8,000 queued 2 KB messages, for five keepalive periods: no more than
    receive_maximum messages wait unacknowledged in the client (Mosquitto 2.0.11 sends more once they are
    acknowledged; the connection then pauses reading), memory stays flat, the link never drops."""
    receive_maximum, keepalive, observe = 50, 1, 5.0
    app = make_app()
    connection = _connection(app, mqtt_address, keepalive=keepalive, receive_maximum=receive_maximum)
    pipeline = bspump.Pipeline(app, "Slow")
    source = bspump.mqtt.MQTTSource(app, pipeline, config={"topics": f"{mqtt_topic_prefix}#", "batch_size": 10})
    sink = SlowSink(app, pipeline, id="Slow", delay=0.05)
    pipeline.build(source, sink)
    app.pump_service.add_pipeline(pipeline)
    running = asyncio.create_task(app.run_async())
    await connection.wait_ready(10)
    payload = b"x" * 2048
    await publish_all(mqtt_address.host, mqtt_address.port,
                      ((f"{mqtt_topic_prefix}{n % 10}", payload) for n in range(8000)))
    waiting: list[int] = []
    rss: list[int] = []
    deadline = time.monotonic() + observe
    while time.monotonic() < deadline:  # an observation window, not a wait for a result
        waiting.append(len(source.inbox) + pipeline.in_flight)
        rss.append(_rss_kib())
        await asyncio.sleep(0.05)
    written = len(sink.written)
    await wait_for(lambda: len(sink.written) > written, 5, what="the sink still making progress")
    app.stop()
    await asyncio.wait_for(running, 30)
    growth = rss[-1] - rss[len(rss) // 5]
    print(f"\nslow sink: {written} written in {observe}s, at most {max(waiting)} messages waiting or in flight "
          f"(receive_maximum {receive_maximum}), RSS {rss[0]} -> {rss[-1]} KiB, reading paused "
          f"{connection.reads_paused} times")
    # Reading pauses once the broker exceeded receive_maximum (one message over); while paused, one message
    # per half keepalive is read so that the link stays up.
    bound = receive_maximum + 1 + int(observe / (keepalive / 2))
    assert max(waiting) <= bound, f"{max(waiting)} messages unacknowledged in the client (bound {bound})"
    assert connection.connect_count == 1 and connection.failure_count == 0, "the link dropped under backpressure"
    assert 50 <= written < 8000
    assert growth < 4096, f"RSS grew by {growth} KiB while the sink fell behind"


@pytest.mark.server_control
async def test_subscriptions_are_made_again_after_a_reconnect(mqtt_address: Address, mqtt_topic_prefix: str,
                                                              server_control: ServerControl) -> None:
    """Without a persistent session the restarted broker knows nothing of the client: the connection
    subscribes again, and what is published after the reconnect arrives."""
    app = make_app()
    connection = _connection(app, mqtt_address, clean_start=True)
    pipeline = bspump.Pipeline(app, "Resubscribe")
    sink = MemorySink(app, pipeline, id="Out")
    pipeline.build(bspump.mqtt.MQTTSource(app, pipeline, config={"topics": f"{mqtt_topic_prefix}+/x"}), sink)
    app.pump_service.add_pipeline(pipeline)
    running = asyncio.create_task(app.run_async())
    await connection.wait_ready(10)
    await publish_all(mqtt_address.host, mqtt_address.port, [(f"{mqtt_topic_prefix}a/x", b"before")])
    await wait_for(lambda: sink.events == [b"before"], 10, what="the message before the restart")
    await asyncio.to_thread(server_control.restart, "mosquitto")
    await wait_for(lambda: connection.connect_count >= 2 and connection.ready, 30, what="the reconnect")
    assert not connection.session_present
    await publish_all(mqtt_address.host, mqtt_address.port, [(f"{mqtt_topic_prefix}b/x", b"after")])
    await wait_for(lambda: sink.events == [b"before", b"after"], 10, what="the message after the reconnect")
    app.stop()
    assert await asyncio.wait_for(running, 30) == 0


@pytest.mark.parametrize("mode", ["whole", "on_demand"])
async def test_lookup_reads_retained_messages(mqtt_address: Address, mqtt_topic_prefix: str, mode: str) -> None:
    prefix = f"{mqtt_topic_prefix}devices/"
    await publish_all(mqtt_address.host, mqtt_address.port, [
        (f"{prefix}pump-1", b'{"site": "north"}'), (f"{prefix}pump-2", b'{"site": "south"}'),
        (f"{mqtt_topic_prefix}elsewhere", b'{"site": "not under the prefix"}')], retain=True)
    app = make_app()
    _connection(app, mqtt_address)
    lookup = bspump.mqtt.MQTTLookup(app, "Devices", config={"topic_prefix": prefix, "mode": mode})
    app.pump_service.add_lookup(lookup)
    await app.pump_service.connections["MQTTConnection"].open()
    try:
        await lookup.start()
        if mode == "whole":
            assert dict(lookup) == {"pump-1": {"site": "north"}, "pump-2": {"site": "south"}}
        else:
            await lookup.prefetch(["pump-2", "pump-9"])
            assert lookup.get("pump-2") == {"site": "south"} and "pump-9" not in lookup
            assert await lookup.aget("pump-1") == {"site": "north"} and lookup.queries == 2
    finally:
        await lookup.stop()
        await app.pump_service.connections["MQTTConnection"].close()
        await publish_all(mqtt_address.host, mqtt_address.port, [
            (f"{prefix}pump-1", b""), (f"{prefix}pump-2", b""), (f"{mqtt_topic_prefix}elsewhere", b"")], retain=True)
