"""MQTTSource: subscribes to topic filters and acknowledges each QoS 1/2 message only after the sink did."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import aiomqtt
import orjson

import bspump
from bspump import context as keys
from bspump.config import Choice, Int, Seconds

from .connection import MQTTConnection
from .inbox import Inbox
from .ledger import Receipt

if TYPE_CHECKING:
    from bspump import BSPumpApplication, Pipeline

#: The one partition of an MQTT source: its messages in arrival order.
PARTITION = "messages"
PAYLOADS = ("bytes", "utf-8", "json")
#: Context keys besides ``topic`` (``bspump.context.TOPIC``).
QOS, RETAIN, MID, PROPERTIES = "qos", "retain", "mid", "properties"


class MQTTSource(bspump.PositionedSource[str]):
    """Reads the messages of one or more topic filters and hands them on in batches.

    Configured in ``[pipeline:ID:MQTTSource]``::

        [pipeline:Telemetry:MQTTSource]
        topics = devices/+/telemetry, $share/pumps/alerts/#
        qos = 1
        payload = json

    Keys:

    - ``topics``: topic filters, comma-separated, with the wildcards ``+`` and ``#``. A filter
      ``$share/GROUP/filter`` is a shared subscription: the broker splits its messages between every client
      subscribed with the same GROUP (MQTT 5; Mosquitto also offers it to 3.1.1 clients), so several pump
      processes, each with its own ``client_id``, share one stream.
    - ``qos``: the QoS asked for (0, 1 or 2; default 1). QoS 1 and 2 messages are acknowledged to the
      broker (PUBACK, PUBCOMP) only once the pipeline's sink acknowledged them, in the order they arrived:
      with a persistent session, a crash or kill loses none of them, the broker sends them again.
    - ``payload``: ``bytes`` (default), ``utf-8`` (text) or ``json``. A payload that does not decode meets the
      pipeline's error policy (dead letter), with its topic in the context.
    - ``batch_size``: most messages per batch.
    - ``qos0_limit``: QoS 0 messages that may wait for a slow pipeline; more are dropped and counted (QoS 0
      has no flow control; QoS 1/2 messages are bounded by the connection's ``receive_maximum``).
    - ``commit_interval``: seconds between acknowledgements to the broker while nothing new arrives; while
      messages keep coming they are acknowledged after every batch.

    Each event's context holds ``topic``, ``qos``, ``retain``, ``mid`` (the packet id) and, under MQTT 5,
    ``properties`` (a dict, only when the message has any). The subscriptions belong to the connection:
    they are made again at every connect.

    A note on QoS 2: the client answers PUBREC on receipt (paho does) and reads the message at its release
    (PUBREL); its PUBCOMP waits for the sink, also across a reconnect of the resumed session. The broker
    sends the content only once, so a message received but not yet released when the link drops, or read
    but not yet acknowledged when the pump is killed, is lost. Use QoS 1 where that must not happen.
    """

    ConnectionType = MQTTConnection
    ConfigRequired: ClassVar[tuple[str, ...]] = ("topics",)
    ConfigDefaults: ClassVar[dict[str, Any]] = {
        "topics": "",
        "qos": Int(1, min=0, max=2),
        "payload": Choice("bytes", PAYLOADS, aliases={"text": "utf-8", "utf8": "utf-8"}),
        "batch_size": Int(500, min=1, max=100_000),
        "qos0_limit": Int(10_000, min=1, max=10_000_000),
        "commit_interval": Seconds(0.05, min=0.001, max=60.0),
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
        filters = tuple(config.getlist("topics"))
        for topic_filter in filters:
            problem = _filter_problem(topic_filter)
            if problem:
                raise config.error("topics", f"{topic_filter!r} is not a valid topic filter: {problem}")
        self.filters = filters
        self.qos = config.getint("qos")
        self.payload = config.getchoice("payload")
        self.batch_size = config.getint("batch_size")
        self.inbox = Inbox(self.qualified_id, config.getint("qos0_limit"))
        assert isinstance(self.connection, MQTTConnection)
        self.mqtt: MQTTConnection = self.connection
        self.mqtt.subscribe(filters, self.qos, self.inbox)
        # (batch number, receipts of its QoS 1/2 messages) for the batches not acknowledged to the broker yet
        self._unacknowledged: deque[tuple[int, list[Receipt]]] = deque()
        self._batch_number = 0
        #: Acknowledgements (PUBACK/PUBCOMP) sent for this source's messages.
        self.acknowledged = 0

    async def main(self) -> None:
        inbox = self.inbox
        await self.wait_connections_ready()
        while True:
            if not inbox.messages:
                # Acknowledgements complete while nothing arrives: commit them on a short tick (only while
                # some are outstanding), since the broker sends no more than receive_maximum unacknowledged.
                await inbox.wait(self.commit_interval if self._unacknowledged else None)
                await self.commit()
                continue
            if not self.pipeline.ready:
                await self.wait_ready()
            await self._emit(inbox.take(self.batch_size))
            await self.commit()  # cheap when nothing completed; acknowledging early keeps the broker sending

    async def _emit(self, messages: list[tuple[aiomqtt.Message, Receipt | None]]) -> None:
        self._batch_number += 1
        number = self._batch_number
        receipts = [receipt for _, receipt in messages if receipt is not None]
        self._unacknowledged.append((number, receipts))
        delivery = self.track({PARTITION: number})
        decode = self.payload
        events: list[Any] = []
        contexts: list[dict[str, Any]] = []
        for message, _ in messages:
            context = {keys.TOPIC: message.topic.value, QOS: message.qos, RETAIN: message.retain, MID: message.mid}
            properties = message.properties
            if properties is not None and not properties.isEmpty():  # type: ignore[no-untyped-call]
                context[PROPERTIES] = properties.json()  # type: ignore[no-untyped-call]
            raw = message.payload
            try:
                event: Any = raw if decode == "bytes" else bytes(raw).decode() if decode == "utf-8" \
                    else orjson.loads(raw)
            except ValueError as exc:  # UnicodeDecodeError and orjson.JSONDecodeError are ValueErrors
                self.pipeline.reject(self, context, raw, exc, delivery)
                continue
            events.append(event)
            contexts.append(context)
        await self.emit(events, contexts=contexts, delivery=delivery)

    async def commit_positions(self, positions: Mapping[str, Any]) -> None:
        """Acknowledge to the broker every message of the batches up to ``positions[PARTITION]`` (all of
        them acknowledged by the sink: the position tracker never passes a gap)."""
        upto = positions.get(PARTITION)
        if upto is None:
            return
        pending = self._unacknowledged
        settled: list[Receipt] = []
        while pending and pending[0][0] <= upto:
            settled.extend(pending.popleft()[1])
        if settled:
            self.mqtt.acknowledge(settled)
            self.acknowledged += len(settled)

    async def load_positions(self) -> dict[str, Any]:
        """Nothing to load: the broker's session keeps what was not acknowledged."""
        return {}

    def gauges(self) -> Mapping[str, float]:
        return {"waiting": float(len(self.inbox)), "qos0_dropped": float(self.inbox.dropped),
                "unacknowledged_batches": float(len(self._unacknowledged))}


def _filter_problem(topic_filter: str) -> str | None:
    """Why ``topic_filter`` is not a valid MQTT topic filter, or ``None``."""
    if not topic_filter:
        return "it is empty"
    levels = topic_filter.split("/")
    if levels[0] == "$share":
        if len(levels) < 3 or not levels[1] or any(c in levels[1] for c in "+#"):
            return "a shared subscription reads $share/GROUP/filter"
        levels = levels[2:]
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            return "'#' must be a whole level and the last one"
        if "+" in level and level != "+":
            return "'+' must be a whole level"
    return None
