"""A pump process for the MQTT integration tests: MQTTSource -> MQTTSink, passing payloads through.

    python mqtt_pump.py HOST PORT CLIENT_ID FILTERS OUT_TOPIC QOS [SINK_DELAY]

Prints ``ready`` once its connection is subscribed. Run by the tests as a real subprocess, so that it can
be SIGKILLed mid-stream and started again, and so that two of them can share one subscription.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import bspump
import bspump.mqtt
from bspump.testing import make_app


class SlowSink(bspump.mqtt.MQTTSink):
    """Waits before each batch, so that a kill lands while messages are in flight."""

    def __init__(self, *args: Any, delay: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.delay = delay

    async def send(self, batch: bspump.Batch, confirm: Any) -> None:
        await asyncio.sleep(self.delay)
        await super().send(batch, confirm)


def main(argv: list[str]) -> int:
    host, port, client_id, filters, out_topic, qos = argv[:6]
    delay = float(argv[6]) if len(argv) > 6 else 0.0
    app = make_app()
    service = app.get_service("bspump.PumpService")
    connection = bspump.mqtt.MQTTConnection(app, "MQTTConnection", config={
        "host": host, "port": int(port), "client_id": client_id, "session_expiry": 600,
        "reconnect_initial": 0.1, "reconnect_max": 1.0})
    service.add_connection(connection)

    def announce(_: bspump.Connection, state: bspump.ConnectionState) -> None:
        if state is bspump.ConnectionState.READY:
            print("ready", flush=True)

    connection.add_listener(announce)
    pipeline = bspump.Pipeline(app, "Pump", config={"max_in_flight": 200})
    source = bspump.mqtt.MQTTSource(app, pipeline, config={"topics": filters, "qos": int(qos), "batch_size": 20})
    sink_config = {"topic": out_topic, "qos": 1, "format": "bytes"}
    sink = SlowSink(app, pipeline, id="MQTTSink", config=sink_config, delay=delay) if delay else \
        bspump.mqtt.MQTTSink(app, pipeline, config=sink_config)
    pipeline.build(source, sink)
    service.add_pipeline(pipeline)
    return app.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
