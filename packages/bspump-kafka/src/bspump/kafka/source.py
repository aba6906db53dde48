"""KafkaSource: a consumer-group member that commits offsets only after the pipeline acknowledged them."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

import bspump
from bspump.config import Choice, Int, Seconds

from .backend import ConsumerClient, Fetched, Partition
from .connection import KafkaConnection
from .options import ISOLATION_LEVELS, OFFSET_RESETS, ConsumerSettings

if TYPE_CHECKING:
    from bspump import BSPumpApplication, Pipeline

log = logging.getLogger("bspump.kafka")

FORMATS = ("bytes", "text", "json")
KEY_FORMATS = ("bytes", "text")


class KafkaSource(bspump.PositionedSource[Partition]):
    """Reads ``topics`` (or every topic matching ``topic_pattern``) as a member of ``group_id``.

    Each fetch of up to ``batch_size`` records becomes one batch for the pipeline. Every event carries
    ``topic``, ``partition``, ``offset``, ``key``, ``timestamp`` (ms) and ``headers`` in its context (a
    :class:`KafkaContexts`: each context is built where a processor, the sink or a policy reads it).
    ``format`` decodes values: ``bytes`` (as is), ``text`` (UTF-8) or ``json``; a value that does not
    decode goes to the pipeline's error policy (e.g. to the dead-letter sink) with its position.

    Delivery: offsets are committed only for events the sink acknowledged (or the pipeline deliberately
    dropped or dead-lettered), per partition, up to the highest contiguous acknowledged offset, every
    ``commit_interval``, when partitions are revoked (after waiting up to ``revoke_timeout`` for their
    in-flight events) and at stop. After a crash the group re-reads from the last commit: at least once.
    The source does not fetch while the pipeline is throttled, so memory stays bounded; it keeps polling
    (paused) meanwhile, so that it stays in its group.

    ``group_id`` defaults to the pipeline ID, so the same pipeline started in several processes forms
    one consumer group and shares the partitions. ``group_instance_id`` makes the member static: set it
    when a process manager (systemd, a Kubernetes StatefulSet, supervisord) restarts the same instance, to
    a name unique in the group and stable across restarts (``${HOSTNAME}``, ``worker-1``). A member
    restarted with the same id within ``session_timeout_ms`` takes its partitions back at once, instead of
    waiting for the broker to expire its previous self (a whole session timeout, during which those
    partitions are read by nobody) and for a rebalance of the whole group. A static member does not leave
    the group when it stops, so its partitions move to the others only after ``session_timeout_ms``:
    leave it empty where instances come and go (autoscaling), and never give two running processes the
    same id (the broker fences the older one). ``auto_offset_reset`` defaults to ``earliest``: a new
    group reads what is already in the topic rather than silently skipping it.

    Other keys: ``key_format`` (``bytes`` or ``text``: how the context's ``key`` is given);
    ``fetch_timeout`` (how long one fetch waits for records); ``isolation_level`` (``read_uncommitted`` or
    ``read_committed``); and the consumer's own ``session_timeout_ms``, ``heartbeat_interval_ms``,
    ``max_poll_interval_ms`` (the source polls paused at a third of it while the pipeline is throttled),
    ``fetch_max_wait_ms``, ``fetch_min_bytes``, ``fetch_max_bytes`` and ``max_partition_fetch_bytes``.
    """

    ConnectionType = KafkaConnection
    ConfigDefaults: ClassVar[dict[str, Any]] = {
        "topics": [],
        "topic_pattern": "",
        "group_id": "",
        "group_instance_id": "",
        "auto_offset_reset": Choice("earliest", OFFSET_RESETS, aliases={"smallest": "earliest", "largest": "latest"}),
        "format": Choice("bytes", FORMATS, aliases={"utf-8": "text", "utf8": "text", "raw": "bytes"}),
        "key_format": Choice("bytes", KEY_FORMATS, aliases={"utf-8": "text", "utf8": "text"}),
        "batch_size": Int(1000, min=1, max=100_000),
        "fetch_timeout": Seconds(0.5, min=0.001),
        "revoke_timeout": Seconds(10.0, min=0.0),
        "session_timeout_ms": Int(10000, min=1),
        "heartbeat_interval_ms": Int(3000, min=1),
        "max_poll_interval_ms": Int(300000, min=1),
        "fetch_max_wait_ms": Int(500, min=0),
        "fetch_min_bytes": Int(1, min=1),
        "fetch_max_bytes": Int(52428800, min=1),
        "max_partition_fetch_bytes": Int(1048576, min=1),
        "isolation_level": Choice("read_uncommitted", ISOLATION_LEVELS),
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
        topics = tuple(config.getlist("topics"))
        pattern = str(config.get("topic_pattern") or "")
        if bool(topics) == bool(pattern):
            raise config.error("topics", "set either topics (a comma-separated list) or topic_pattern "
                                         "(a regular expression), not both and not neither")
        if pattern:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise config.error("topic_pattern", f"is not a valid regular expression: {exc}") from None
        self.format = config.getchoice("format")
        self.key_format = config.getchoice("key_format")
        self.batch_size = config.getint("batch_size")
        self.fetch_timeout = config.getseconds("fetch_timeout")
        self.revoke_timeout = config.getseconds("revoke_timeout")
        self.settings = ConsumerSettings(
            group_id=str(config.get("group_id") or "") or str(getattr(pipeline, "id", "") or self.id),
            group_instance_id=str(config.get("group_instance_id") or ""),
            topics=topics,
            topic_pattern=pattern,
            auto_offset_reset=config.getchoice("auto_offset_reset"),
            session_timeout_ms=config.getint("session_timeout_ms"),
            heartbeat_interval_ms=config.getint("heartbeat_interval_ms"),
            max_poll_interval_ms=config.getint("max_poll_interval_ms"),
            fetch_max_wait_ms=config.getint("fetch_max_wait_ms"),
            fetch_min_bytes=config.getint("fetch_min_bytes"),
            fetch_max_bytes=config.getint("fetch_max_bytes"),
            max_partition_fetch_bytes=config.getint("max_partition_fetch_bytes"),
            isolation_level=config.getchoice("isolation_level"),
        )
        self.client: ConsumerClient | None = None
        self._fetched: dict[Partition, int] = {}  # next offset to fetch, per partition (for the lag)
        self.records_fetched = 0
        self.revocations = 0

    @property
    def group_id(self) -> str:
        """The consumer group this source joins."""
        return self.settings.group_id

    # -- reading ------------------------------------------------------------------------------------------
    async def main(self) -> None:
        self.client = await self.start_client(self._start_consumer, "starting the consumer")
        instance = self.settings.group_instance_id
        log.info("%s: consuming %s as group %r%s", self.qualified_id,
                 self.settings.topic_pattern or ",".join(self.settings.topics), self.group_id,
                 f", static member {instance!r}" if instance else "")
        await self._consume(self.client)

    async def _start_consumer(self) -> ConsumerClient:
        kafka = self.kafka
        client = kafka.backend.consumer(kafka.options, self.settings, self._assigned, self._revoked,
                                        self.revoke_timeout, kafka)
        try:
            await client.start()
        except BaseException:
            await _quietly(client.close())
            raise
        return client

    async def _consume(self, client: ConsumerClient) -> None:
        pipeline = self.pipeline
        batch_size = self.batch_size
        timeout = self.fetch_timeout
        # Under backpressure: no fetch, but a paused poll often enough to stay in the group.
        keepalive_interval = self.settings.max_poll_interval_ms / 3000
        while True:
            if not pipeline.ready:
                await self.wait_ready(client.idle, keepalive_interval)
            fetched = await client.fetch(batch_size, timeout)
            if fetched.values:
                await self._emit(fetched)
            await self.maybe_commit()

    async def _emit(self, fetched: Fetched) -> None:
        values, fetched_contexts, positions = fetched
        self.records_fetched += len(values)
        self._fetched.update(positions)
        delivery = self.track(positions)
        if self.key_format == "text":
            fetched_contexts.text_keys = True  # decoded where a context or the key column is read
        contexts: Sequence[dict[str, Any]] = fetched_contexts
        fmt = self.format
        events: list[Any]
        if fmt == "bytes":
            events = values
        else:
            decode: Callable[[Any], Any] = orjson.loads if fmt == "json" else _decode_text
            try:
                events = list(map(decode, values))
            except (ValueError, TypeError):
                events, contexts = self._decode_each(values, contexts, decode, delivery)
        await self.emit(events, None, contexts, delivery)

    def _decode_each(
        self,
        values: list[bytes | None],
        contexts: Sequence[dict[str, Any]],
        decode: Callable[[Any], Any],
        delivery: bspump.Delivery,
    ) -> tuple[list[Any], list[dict[str, Any]]]:
        events: list[Any] = []
        kept: list[dict[str, Any]] = []
        for value, context in zip(values, contexts, strict=True):
            if value is None:  # a tombstone: no value to decode, pass it on as None
                events.append(None)
                kept.append(context)
                continue
            try:
                events.append(decode(value))
            except (ValueError, TypeError) as exc:
                # Raises PipelineStoppedError under error_policy = stop; the offset stays uncommitted.
                self.pipeline.reject(self, context, value, exc, delivery)
                continue
            kept.append(context)
        return events, kept

    # -- metrics ------------------------------------------------------------------------------------------
    def gauges(self) -> dict[str, float]:
        """``lag``: records not fetched yet in the assigned partitions this member has read from (end offset
        as the client last heard it, minus the next offset to fetch); ``partitions_unread``: assigned
        partitions it has not read from since they were assigned (their lag is unknown until it does: a
        value that stays above 0 while ``lag`` is high points at a stuck partition); ``partitions``: how
        many partitions this member owns."""
        client = self.client
        if client is None:
            return {}
        assigned = client.assignment()
        highwaters = client.highwaters()
        fetched = self._fetched
        lag = 0
        unread = 0
        for partition in assigned:
            position = fetched.get(partition)
            if position is None:
                unread += 1
                continue
            high = highwaters.get(partition)
            if high is not None and high > position:
                lag += high - position
        return {"lag": float(lag), "partitions_unread": float(unread), "partitions": float(len(assigned))}

    # -- committing ---------------------------------------------------------------------------------------
    def owned_partitions(self) -> set[Partition]:
        """What this member may commit: its current assignment (revoked partitions belong to their new owner)."""
        client = self.client
        return set() if client is None else client.assignment()

    async def commit_positions(self, positions: Mapping[Partition, int]) -> None:
        """Commit the group's offsets on the broker."""
        assert self.client is not None
        await self.client.commit(positions)

    def _assigned(self, partitions: list[Partition]) -> None:
        log.info("%s: assigned %s", self.qualified_id, _describe(partitions))

    async def _revoked(self, partitions: list[Partition]) -> dict[Partition, int]:
        """Wait (bounded) for in-flight events of revoked partitions; return their offsets to commit."""
        self.revocations += 1
        offsets = await self.revoke(partitions, self.revoke_timeout)
        for partition in partitions:
            self._fetched.pop(partition, None)
        log.info("%s: revoked %s; committing %s", self.qualified_id, _describe(partitions), offsets or "nothing")
        return offsets

    # -- stopping -----------------------------------------------------------------------------------------
    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            await client.close()


def _decode_text(value: bytes) -> str:
    return value.decode("utf-8")


def _describe(partitions: list[Partition]) -> str:
    by_topic: dict[str, list[int]] = {}
    for topic, partition in partitions:
        by_topic.setdefault(topic, []).append(partition)
    return "; ".join(f"{t}[{','.join(map(str, sorted(p)))}]" for t, p in sorted(by_topic.items())) or "nothing"


async def _quietly(awaitable: Any) -> None:
    try:
        await awaitable
    except Exception as exc:
        log.debug("cleanup failed: %s", exc)
