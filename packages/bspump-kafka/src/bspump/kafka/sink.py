"""KafkaSink: produces events and acknowledges them upstream only when the broker confirmed them."""

from __future__ import annotations

import functools
import logging
import operator
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import bspump
from bspump.config import Choice, Int
from bspump.context import DEAD_LETTER_KEYS, ERROR, OFFSET, PARTITION, TOPIC
from bspump.streaming_sink import Confirm

from .backend import OutBatch, ProducerClient
from .codec import encode_as, encode_auto, encode_key
from .connection import KafkaConnection
from .options import ACKS, COMPRESSION_TYPES, ProducerSettings

if TYPE_CHECKING:
    from bspump import BSPumpApplication, Pipeline

log = logging.getLogger("bspump.kafka")

FORMATS = ("auto", "bytes", "text", "json")

#: Where a dead-lettered event was read, when its source says so; sent as ``source_<key>`` headers.
SOURCE_POSITION_KEYS = (TOPIC, PARTITION, OFFSET)


class KafkaSink(bspump.StreamingSink):
    """Produces every event to ``topic`` and acknowledges it once the broker confirmed the write.

    Topic: ``topic_field`` (a key of dict events) or ``topic_context_key`` (a context key a processor
    set) when present, else the fixed ``topic``. Key: ``key_field`` of dict events, else the context's
    ``key`` (what KafkaSource read, so a topic-to-topic pipeline keeps its keys and partitioning) unless
    ``key_from_context`` is false. Headers: the context's ``headers`` unless ``headers_from_context`` is
    false. Values: ``format`` ``auto`` writes bytes as they are, strings as UTF-8 and anything else as JSON;
    ``json``, ``text`` and ``bytes`` force one encoding.

    Producer: ``acks`` (all, 1, 0; default all), ``compression_type`` (none, gzip, snappy, lz4, zstd),
    ``linger_ms``, ``max_batch_size`` (bytes per partition batch), ``max_request_size``,
    ``enable_idempotence``. ``queue_limit``: batches waiting to be handed to the producer before the
    pipeline pauses (2 by default; a deeper queue measured slower, as batches go cold in the CPU caches).

    Failures: while the cluster is unreachable (or a partition has no leader) unacknowledged events are
    sent again with backoff for as long as it takes (``retry_timeout = 0``; set it to hand them to the error
    policy after that many seconds), and the pipeline pauses through the connection. Events the broker
    refuses for good (too large, not authorised, cannot be encoded) follow the pipeline's error policy. As
    the dead-letter sink, the error (``error``, ``error_type``, ``error_component``, ``error_pipeline``) and
    the original ``source_topic``, ``source_partition`` and ``source_offset`` travel as message headers. At
    stop, everything accepted is flushed and confirmed.
    """

    ConnectionType = KafkaConnection
    ConfigDefaults: ClassVar[dict[str, Any]] = {
        "topic": "",
        "topic_field": "",
        "topic_context_key": "",
        "key_field": "",
        "key_from_context": True,
        "headers_from_context": True,
        "format": Choice("auto", FORMATS),
        "acks": Choice("all", ACKS, aliases={"-1": "all"}),
        "compression_type": Choice("none", COMPRESSION_TYPES),
        "linger_ms": Int(5, min=0),
        "max_batch_size": Int(262144, min=1),
        "max_request_size": Int(1048576, min=1),
        "enable_idempotence": False,
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
        assert isinstance(self.connection, KafkaConnection)  # ConnectionType: checked by the base
        self.kafka = self.connection
        config = self.Config
        self.topic = str(config.get("topic") or "")
        self.topic_field = str(config.get("topic_field") or "")
        self.topic_context_key = str(config.get("topic_context_key") or "")
        if not (self.topic or self.topic_field or self.topic_context_key):
            raise config.error("topic", "is required (or topic_field / topic_context_key to take the topic "
                                        "from each event or its context)")
        self.key_field = str(config.get("key_field") or "")
        self.key_from_context = config.getboolean("key_from_context")
        self.headers_from_context = config.getboolean("headers_from_context")
        self.format = config.getchoice("format")
        self.settings = ProducerSettings(
            acks=config.getchoice("acks"),
            compression_type=config.getchoice("compression_type"),
            linger_ms=config.getint("linger_ms"),
            max_batch_size=config.getint("max_batch_size"),
            max_request_size=config.getint("max_request_size"),
            enable_idempotence=config.getboolean("enable_idempotence"),
        )
        self._fast = self.format == "auto" and not (self.topic_field or self.topic_context_key or self.key_field)
        self.producer: ProducerClient | None = None

    # -- framework API ------------------------------------------------------------------------------------
    async def start(self) -> None:
        if self.is_dead_letter:
            self._fast = False  # dead letters carry their error into headers: the careful path does that
        await super().start()

    async def close(self) -> None:
        await super().close()  # the writer first: nothing is sent once the producer is closed
        producer, self.producer = self.producer, None
        if producer is not None:
            await producer.close()

    # -- writing ------------------------------------------------------------------------------------------
    async def open_client(self) -> None:
        """The producer starts right away, while the source joins its group, not when the first batch arrives."""
        self.producer = await self.start_client(self._start_producer, "starting the producer")

    async def _start_producer(self) -> ProducerClient:
        kafka = self.kafka
        producer = kafka.backend.producer(kafka.options, self.settings, kafka)
        await producer.start()  # a producer that fails to start releases what it opened
        return producer

    async def send(self, batch: bspump.Batch, confirm: Confirm) -> None:
        out, index_map, failures = self.encode(batch)
        if not out.values:
            confirm(failures)
            return
        producer = self.producer
        assert producer is not None  # open_client ran first
        await producer.send(out, functools.partial(_report, confirm, index_map, failures))

    def encode(self, batch: bspump.Batch) -> tuple[OutBatch, list[int] | None, list[bspump.ItemFailure]]:
        """The records of ``batch``; ``index_map[i]`` is the batch index of record ``i`` when some failed, whose
        failures come third."""
        if self._fast:
            try:
                return self._encode_fast(batch), None, []
            except Exception:
                pass
        return self._encode_careful(batch)

    def _encode_fast(self, batch: bspump.Batch) -> OutBatch:
        """The common case (fixed topic, ``format = auto``, bytes keys): column by column; raises otherwise."""
        events = batch.events
        contexts = batch.contexts
        if contexts is None:
            contexts = [batch.context] * len(events)
        keys: list[Any] | None = None
        if self.key_from_context:
            keys = _column(contexts, _KEY, "key")
            if keys.count(None) == len(keys):
                keys = None
            elif any(type(k) is not bytes for k in keys if k is not None):
                keys = [encode_key(k) for k in keys]
        headers: list[Any] | None = None
        if self.headers_from_context:
            headers = _column(contexts, _HEADERS, "headers")
            if not any(headers):
                headers = None
        # Values are encoded one by one inside the producer's loop, each copied into the batch and freed at
        # once: encoding a whole column first keeps a thousand fresh buffers alive, which costs more in the
        # allocator than the encoding itself.
        return OutBatch(self.topic, events, keys, headers, encode=encode_auto)

    def _encode_careful(
        self, batch: bspump.Batch
    ) -> tuple[OutBatch, list[int] | None, list[bspump.ItemFailure]]:
        values: list[bytes | None] = []
        keys: list[bytes | None] = []
        headers_column: list[Any] = []
        topics: list[str] = []
        index_map: list[int] | None = None
        failures: list[bspump.ItemFailure] = []
        topic = self.topic
        dynamic_topic = bool(self.topic_field or self.topic_context_key)
        key_field = self.key_field
        key_from_context = self.key_from_context
        headers_from_context = self.headers_from_context
        fmt = self.format
        for index, (context, event) in enumerate(batch):
            try:
                if dynamic_topic:
                    topic = self._topic_of(context, event)
                value = encode_auto(event) if fmt == "auto" else encode_as(event, fmt)
                key: Any = None
                if key_field and isinstance(event, Mapping):
                    key = event.get(key_field)
                if key is None and key_from_context:
                    key = context.get("key")
                key = encode_key(key)
                headers = context.get("headers") if headers_from_context else None
                if ERROR in context:
                    headers = _error_headers(context, headers)
                elif headers is not None and type(headers) is not list:
                    headers = list(headers)
            except Exception as exc:
                if index_map is None:
                    index_map = list(range(index))
                failures.append(bspump.ItemFailure(index, exc, bspump.ErrorKind.PERMANENT))
                continue
            values.append(value)
            keys.append(key)
            headers_column.append(headers)
            topics.append(topic)
            if index_map is not None:
                index_map.append(index)
        out = OutBatch(
            self.topic,
            values,
            None if keys.count(None) == len(keys) else keys,
            headers_column if any(headers_column) else None,
            topics if dynamic_topic else None,
        )
        return out, index_map, failures

    def _topic_of(self, context: Mapping[str, Any], event: Any) -> str:
        topic = None
        if self.topic_field and isinstance(event, Mapping):
            topic = event.get(self.topic_field)
        if not topic and self.topic_context_key:
            topic = context.get(self.topic_context_key)
        topic = topic or self.topic
        if not topic:
            raise ValueError(f"no topic: the event has no {self.topic_field or self.topic_context_key!r} and "
                             "no fixed topic is configured")
        return str(topic)


def _report(
    confirm: Confirm,
    index_map: list[int] | None,
    encode_failures: list[bspump.ItemFailure],
    send_failures: list[tuple[int, BaseException]],
) -> None:
    """The producer's report of one send, as the base sink's confirmation: record indexes become batch
    indexes, and the events that could not be encoded join the failures."""
    if not send_failures:
        confirm(encode_failures)
        return
    failures = list(encode_failures)
    failures.extend(bspump.ItemFailure(i if index_map is None else index_map[i], error) for i, error in send_failures)
    confirm(failures)


_KEY = operator.itemgetter("key")
_HEADERS = operator.itemgetter("headers")


def _column(contexts: Sequence[Any], getter: Any, key: str) -> list[Any]:
    """``context[key]`` of every context (``None`` where absent), at C speed when all have it, and without
    building lazy contexts that nothing read."""
    if isinstance(contexts, bspump.LazyContexts):
        return contexts.column(key)
    try:
        return list(map(getter, contexts))
    except KeyError:
        return [c.get(key) for c in contexts]


def _error_headers(context: Mapping[str, Any], headers: Sequence[tuple[str, bytes]] | None) -> list[tuple[str, bytes]]:
    result = list(headers or ())
    for key in DEAD_LETTER_KEYS:
        if context.get(key) is not None:
            result.append((key, str(context[key]).encode("utf-8", errors="replace")))
    for key in SOURCE_POSITION_KEYS:
        if context.get(key) is not None:
            result.append((f"source_{key}", str(context[key]).encode()))
    return result
