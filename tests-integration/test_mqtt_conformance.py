"""bspump-mqtt passes the core's conformance kit against the real Mosquitto.

The sink's target is a topic prefix whose events are published as retained messages (one topic per event),
so that "what is durably stored now" is what the broker retains; the source's origin is a topic prefix with
a persistent session prepared for the source's client ID, so that what is fed before the pump starts waits
in the broker, as it would for a pump that ran before.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from mqtt_support import clear_retained, prepare_session, publish_all, retained

import bspump.mqtt
from bspump.testing import ConnectorConformance

if TYPE_CHECKING:
    from conftest import Address

pytestmark = [pytest.mark.mqtt]


class TestMQTTConformance(ConnectorConformance):
    connection_class = bspump.mqtt.MQTTConnection
    source_class = bspump.mqtt.MQTTSource
    sink_class = bspump.mqtt.MQTTSink
    lookup_class = bspump.mqtt.MQTTLookup
    address: Address
    prefix: str
    client_id: str

    @pytest.fixture(autouse=True)
    def _broker(self, mqtt_address: Address, mqtt_topic_prefix: str) -> Iterator[None]:
        self.address = mqtt_address
        self.prefix = mqtt_topic_prefix
        self.client_id = f"conformance-{uuid.uuid4().hex[:12]}"
        self.names = itertools.count()
        yield
        asyncio.run(clear_retained(mqtt_address.host, mqtt_address.port, mqtt_topic_prefix))

    # -- the kit's hooks ---------------------------------------------------------------------------------------
    def connection_config(self) -> dict[str, Any]:
        return {"host": self.address.host, "port": self.address.port, "client_id": self.client_id,
                "session_expiry": 120}

    async def create_target(self) -> str:
        return f"{self.prefix}out{next(self.names)}/"

    def sink_config(self, target: str) -> dict[str, Any]:
        return {"topic": target + "{n}", "retain": True, "qos": 1}

    async def read_target(self, target: str) -> list[Any]:
        return list((await retained(self.address.host, self.address.port, target)).values())

    def bad_event(self) -> Any:
        return {"text": "an event without n: the topic template cannot be filled"}

    async def create_origin(self) -> str:
        origin = f"{self.prefix}in{next(self.names)}/"
        await prepare_session(self.address.host, self.address.port, self.client_id, [origin + "#"], expiry=120)
        return origin

    def source_config(self, origin: str) -> dict[str, Any]:
        return {"topics": origin + "#", "qos": 1, "payload": "json", "batch_size": self.batch_size}

    async def feed_origin(self, origin: str, events: list[Any]) -> None:
        await publish_all(self.address.host, self.address.port,
                          ((f"{origin}{event['n']}", orjson.dumps(event)) for event in events))
