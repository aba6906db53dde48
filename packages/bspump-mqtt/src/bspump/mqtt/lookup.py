"""MQTTLookup: reference data kept by the broker as retained messages (``config/devices/<id>``)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import aiomqtt
import orjson

import bspump
from bspump.config import Choice, Seconds

from .connection import MQTTConnection
from .source import PAYLOADS


class MQTTLookup(bspump.CachedLookup):
    """The retained messages under a topic prefix, by the rest of their topic: with ``topic_prefix =
    config/devices/``, the retained message of ``config/devices/pump-7`` is ``lookup["pump-7"]``.

    Configured in ``[lookup:ID]``::

        [lookup:Devices]
        type = mqtt.MQTTLookup
        connection = MQTTConnection
        topic_prefix = config/devices/
        payload = json
        mode = on_demand
        ttl = 5m

    Keys (besides ``mode``, ``ttl``, ``max_entries``, ``fetch_batch`` and ``refresh`` of its bases):

    - ``connection``: the ID of the :class:`MQTTConnection` whose broker and credentials it uses.
    - ``topic_prefix``: where the entries are; it ends with ``/`` unless keys continue a topic level.
    - ``payload``: ``json`` (default), ``utf-8`` or ``bytes``. A retained message that does not decode
      fails the load or query, naming its topic.
    - ``marker_topic``: MQTT has no "end of retained messages": each load or query subscribes, then
      publishes one non-retained message to a topic of its own under ``marker_topic`` and has everything
      once that message comes back (the broker sends the retained messages of a subscription before it
      handles the client's next publication). The account needs the right to publish and subscribe there.
    - ``timeout``: seconds one load or query may take.

    ``whole`` subscribes to ``topic_prefix#``; ``on_demand`` subscribes to the exact topics of the keys
    asked for (``fetch_batch`` at most per query). Each load or query uses a short-lived client of its own
    with a clean session (see :meth:`MQTTConnection.short_lived_client`).
    """

    ConfigRequired: ClassVar[tuple[str, ...]] = ("topic_prefix",)
    ConfigDefaults: ClassVar[dict[str, Any]] = {
        "connection": "MQTTConnection",
        "topic_prefix": "",
        "payload": Choice("json", PAYLOADS, aliases={"text": "utf-8", "utf8": "utf-8"}),
        "marker_topic": "bspump/lookup-end",
        "timeout": Seconds(30.0, min=0.1, max=3600.0),
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        config = self.Config
        self.prefix = str(config.get("topic_prefix"))
        if "+" in self.prefix or "#" in self.prefix:
            raise config.error("topic_prefix", "is a topic prefix, without wildcards (+, #)")
        self.payload = config.getchoice("payload")
        self.marker_topic = str(config.get("marker_topic")).rstrip("/")
        self.timeout = config.getseconds("timeout")
        connection = self.app.pump_service.locate_connection(str(config.get("connection")),
                                                             referrer=f"lookup {self.id}")
        if not isinstance(connection, MQTTConnection):
            raise config.error("connection", f"MQTTLookup needs an MQTTConnection; {connection!r} is not one")
        self.connection = connection

    async def load(self) -> Mapping[Any, Any]:
        """Every retained message under ``topic_prefix`` (``mode = whole``)."""
        return await self._read([self.prefix + "#"])

    async def fetch(self, keys: Sequence[Any]) -> Mapping[Any, Any]:
        """The retained messages of the keys' topics (``mode = on_demand``); keys without one are left out."""
        return await self._read([self.prefix + str(key) for key in keys])

    async def _read(self, filters: list[str]) -> dict[str, Any]:
        await self.connection.wait_ready(self.timeout)
        marker = f"{self.marker_topic}/{uuid.uuid4().hex}"
        found: dict[str, Any] = {}
        prefix_length = len(self.prefix)
        async with asyncio.timeout(self.timeout):
            async with await self.connection.short_lived_client("lookup") as client:
                await client.subscribe([(f, 1) for f in filters] + [(marker, 1)])
                await client.publish(marker, b"", qos=1)
                async for message in client.messages:
                    topic = message.topic.value
                    if topic == marker:
                        return found
                    if message.retain and topic.startswith(self.prefix):
                        found[topic[prefix_length:]] = self._decode(topic, message.payload)
        raise aiomqtt.MqttError("the marker message never came back")  # the iterator ended: link lost

    def _decode(self, topic: str, payload: Any) -> Any:
        raw = bytes(payload) if isinstance(payload, bytes | bytearray) else str(payload).encode()
        try:
            if self.payload == "json":
                return orjson.loads(raw)
            return raw.decode() if self.payload == "utf-8" else raw
        except ValueError as exc:
            raise ValueError(f"lookup {self.id!r}: the retained message of {topic!r} is not {self.payload}: "
                             f"{exc}") from None
