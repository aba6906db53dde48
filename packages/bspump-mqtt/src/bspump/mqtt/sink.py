"""MQTTSink: publishes events and acknowledges each once the broker confirmed it (PUBACK or PUBCOMP)."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

import bspump
from bspump import context as keys
from bspump.codec import json_default
from bspump.config import Choice, Int
from bspump.embedded.codec import dead_letter
from bspump.failures import ErrorKind, ItemFailure
from bspump.streaming_sink import Confirm

from .connection import MQTTConnection, MQTTLinkError
from .topic_template import TopicTemplate

if TYPE_CHECKING:
    from bspump import Batch, BSPumpApplication, Pipeline

log = logging.getLogger("bspump.mqtt")

FORMATS = ("json", "bytes", "utf-8")


class MQTTSink(bspump.StreamingSink):
    """Publishes each event as one MQTT message.

    Configured in ``[pipeline:ID:MQTTSink]``::

        [pipeline:Telemetry:MQTTSink]
        topic = devices/{device_id}/telemetry
        qos = 1
        format = json

    Keys:

    - ``topic``: the topic, fixed or a template whose ``{field}`` placeholders are filled from the event
      (an event without the field, or whose value holds ``+`` or ``#``, meets the error policy).
    - ``qos``: 0, 1 (default) or 2. An event is acknowledged upstream (its source may then commit) once
      the broker confirmed it: PUBACK for QoS 1, PUBCOMP for QoS 2; at QoS 0 once it was written to the
      socket (no confirmation exists).
    - ``retain``: publish as retained messages.
    - ``format``: the payload: ``json`` (default; orjson), ``bytes`` (events are bytes) or ``utf-8``
      (``str(event)``). As the pipeline's dead-letter sink it publishes JSON with the error and the event.
    - ``max_unconfirmed``: publications handed to the client and not confirmed yet, at most; the sink waits
      for confirmations before it sends more (with the base's ``queue_limit``, this bounds memory).

    When the link drops, the publications not confirmed fail at once (they do not wait for a timeout),
    the connection reconnects, and they are sent again on the new link: at least once, so a publication
    whose PUBACK was lost with the link arrives twice.
    """

    ConnectionType = MQTTConnection
    ConfigRequired: ClassVar[tuple[str, ...]] = ("topic",)
    ConfigDefaults: ClassVar[dict[str, Any]] = {
        "topic": "",
        "qos": Int(1, min=0, max=2),
        "retain": False,
        "format": Choice("json", FORMATS, aliases={"text": "utf-8", "utf8": "utf-8"}),
        "max_unconfirmed": Int(1000, min=1, max=65535),
    }

    def __init__(
        self,
        app: BSPumpApplication,
        pipeline: Pipeline,
        id: str | None = None,
        config: Mapping[str, Any] | None = None,
        connection: str | None = None,
    ) -> None:
        super().__init__(app, pipeline, id=id, config=config, connection=connection)
        config = self.Config
        try:
            self.topic = TopicTemplate(str(config.get("topic")))
        except ValueError as exc:
            raise config.error("topic", str(exc)) from None
        self.qos = config.getint("qos")
        self.retain = config.getboolean("retain")
        self.format = config.getchoice("format")
        self.max_unconfirmed = config.getint("max_unconfirmed")
        assert isinstance(self.connection, MQTTConnection)
        self.mqtt: MQTTConnection = self.connection
        self.mqtt.publishes()
        self._unconfirmed = 0
        self._capacity = asyncio.Event()
        self._capacity.set()
        self._waiters: set[asyncio.Task[None]] = set()

    def encode(self, event: Any, context: Mapping[str, Any]) -> bytes:
        """The payload of ``event``; raises when it cannot be encoded (the event's fault)."""
        if keys.ERROR in context:
            return orjson.dumps(dead_letter(event, dict(context)), default=json_default)
        fmt = self.format
        if fmt == "json":
            return orjson.dumps(event, default=json_default)
        if fmt == "bytes":
            if isinstance(event, bytes | bytearray | memoryview):
                return bytes(event)
            raise TypeError(f"format = bytes needs events of bytes, not {type(event).__name__}")
        return str(event).encode()

    async def send(self, batch: Batch, confirm: Confirm) -> None:
        """Publish every event of ``batch``; ``confirm`` runs once the broker confirmed them all, or the link
        was lost (the unconfirmed ones then fail with a link error and are sent again)."""
        while self._unconfirmed and self._unconfirmed + len(batch) > self.max_unconfirmed:
            self._capacity.clear()
            await self._capacity.wait()
        mqtt = self.mqtt
        client = mqtt.client
        lost = mqtt.lost
        qos, retain, render, encode = self.qos, self.retain, self.topic.render, self.encode
        failures: list[ItemFailure] = []
        publications: list[tuple[int, asyncio.Task[None]]] = []
        loop = asyncio.get_running_loop()
        for index, (context, event) in enumerate(batch):
            try:
                topic = render(event)
                payload = encode(event, context)
            except (KeyError, ValueError, TypeError) as exc:
                failures.append(ItemFailure(index, exc, ErrorKind.PERMANENT))
                continue
            publication = loop.create_task(client.publish(topic, payload, qos, retain, timeout=math.inf))
            publications.append((index, publication))
        self._unconfirmed += len(publications)
        waiter = loop.create_task(self._confirm_when_done(publications, failures, lost, confirm))
        self._waiters.add(waiter)
        waiter.add_done_callback(self._waiters.discard)

    async def _confirm_when_done(self, publications: list[tuple[int, asyncio.Task[None]]],
                                 failures: list[ItemFailure], lost: asyncio.Future[BaseException],
                                 confirm: Confirm) -> None:
        try:
            if publications:
                everything = asyncio.gather(*(task for _, task in publications), return_exceptions=True)
                await asyncio.wait((everything, lost), return_when=asyncio.FIRST_COMPLETED)
                if not everything.done():
                    everything.cancel()
            link_error: BaseException | None = lost.result() if lost.done() else None
            for index, task in publications:
                if not task.done():
                    task.cancel()
                    failures.append(ItemFailure(index, link_error or MQTTLinkError("link lost"), ErrorKind.LINK))
                elif task.cancelled():
                    failures.append(ItemFailure(index, link_error or MQTTLinkError("link lost"), ErrorKind.LINK))
                elif task.exception() is not None:
                    failures.append(ItemFailure(index, task.exception() or MQTTLinkError("link lost")))
        finally:
            self._unconfirmed -= len(publications)
            self._capacity.set()
        failures.sort(key=lambda failure: failure.index)
        confirm(failures)

    async def close(self) -> None:
        await super().close()
        waiters = list(self._waiters)
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)

    def gauges(self) -> Mapping[str, float]:
        return {"unconfirmed": float(self._unconfirmed)}
