"""Smoke test of an installed bspump-mqtt wheel (run by ``nox -s wheel_install``, not by pytest).

In a venv holding only bspump-core and bspump-mqtt from their wheels, one application runs two pipelines on
one ``MQTTConnection``: the first publishes events through ``MQTTSink`` (QoS 1), the second subscribes to
them through ``MQTTSource``; every event must come back. It needs a broker (``BSPUMP_TEST_MQTT``, default
127.0.0.1:1883); without one it exits 77 (skipped).
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
import uuid

import bspump
import bspump.mqtt

SKIPPED = 77
EVENTS = [{"order": n, "item": f"item-{n}"} for n in range(50)]


def broker() -> tuple[str, int]:
    host, _, port = os.environ.get("BSPUMP_TEST_MQTT", "127.0.0.1:1883").rpartition(":")
    return host or "127.0.0.1", int(port or 1883)


def answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


class Later(bspump.Source):
    """Emits the events once the subscribing pipeline's connection is ready (it subscribed by then)."""

    def __init__(self, *args: object, connection_to_wait: bspump.Connection, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.connection_to_wait = connection_to_wait

    async def main(self) -> None:
        await self.connection_to_wait.wait_ready(30)
        await self.emit(list(EVENTS))


async def main() -> int:
    host, port = broker()
    if not answers(host, port):
        print(f"skipped: no MQTT broker answers at {host}:{port} (BSPUMP_TEST_MQTT)")
        return SKIPPED
    print(f"bspump {bspump.__version__}; bspump.mqtt from {os.path.dirname(bspump.mqtt.__file__)}")
    topic = f"bspump-smoke-install/{uuid.uuid4().hex[:8]}"
    app = bspump.BSPumpApplication(load_plugins=False)
    service = app.get_service("bspump.PumpService")
    connection = bspump.mqtt.MQTTConnection(app, "MQTTConnection", config={
        "host": host, "port": port, "client_id": f"smoke-{uuid.uuid4().hex[:8]}", "clean_start": True})
    service.add_connection(connection)
    reading = bspump.Pipeline(app, "Read")
    received = bspump.MemorySink(app, reading)
    reading.build(bspump.mqtt.MQTTSource(app, reading, config={"topics": f"{topic}/#", "payload": "json"}),
                  received)
    service.add_pipeline(reading)
    writing = bspump.Pipeline(app, "Write")
    writing.build(Later(app, writing, connection_to_wait=connection),
                  bspump.mqtt.MQTTSink(app, writing, config={"topic": topic + "/{order}"}))
    service.add_pipeline(writing)
    running = asyncio.create_task(app.run_async())
    deadline = time.monotonic() + 60
    while len(received.events) < len(EVENTS) and time.monotonic() < deadline and not running.done():
        await asyncio.sleep(0.05)
    app.stop()
    if await running != 0:
        print("error: the application failed", file=sys.stderr)
        return 1
    ordered = sorted(received.events, key=lambda event: event["order"])
    if ordered != EVENTS:
        print(f"error: published {len(EVENTS)} events, received {len(received.events)} that differ", file=sys.stderr)
        return 1
    print(f"ok: {len(EVENTS)} events through MQTTSink and back through MQTTSource ({topic})")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
