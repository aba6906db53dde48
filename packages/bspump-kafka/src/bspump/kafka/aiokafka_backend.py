"""The aiokafka backend (the default): pure Python, native asyncio.

The producer uses aiokafka's batch API (one ``BatchBuilder`` per topic partition and call) rather than a
``send()`` per message: it avoids a future and an accumulator round per message, which is most of the
per-message cost of aiokafka's producer. Keys are partitioned with aiokafka's own murmur2 partitioner (the
Java client's), so the same key lands in the same partition as with any other client; records without a key
go to one partition per call, rotating between calls (the Java client's "sticky" idea).
"""

from __future__ import annotations

import asyncio
import logging
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    TopicPartition,
)
from aiokafka import __version__ as aiokafka_version
from aiokafka import errors as kafka_errors
from aiokafka.client import AIOKafkaClient
from aiokafka.partitioner import murmur2

from bspump import ErrorKind
from bspump.codec import json_default
from bspump.log_limit import limit_logger_rate

from .aiokafka_records import appends_directly, finish_batch, record_appender
from .backend import (
    AssignHandler,
    Fetched,
    LinkGate,
    OutBatch,
    Partition,
    PartitionTurns,
    RevokeHandler,
    SendDone,
)
from .codec import encode_auto
from .contexts import KafkaContexts
from .options import (
    ClientOptions,
    ConsumerSettings,
    ProducerSettings,
    aiokafka_common,
    aiokafka_consumer,
    aiokafka_producer,
)

log = logging.getLogger("bspump.kafka")

_LINK_ERRORS = (
    kafka_errors.KafkaConnectionError,
    kafka_errors.NodeNotReadyError,
    kafka_errors.KafkaTimeoutError,
    kafka_errors.RequestTimedOutError,
    kafka_errors.NoBrokersAvailable,
)


def wait_on_link(client: AIOKafkaClient, link: LinkGate) -> None:
    """Make ``client`` wait on the bspump connection while the cluster is unreachable.

    aiokafka refreshes metadata in a background task woken by every request that needs it; when no broker
    answers, the refresh fails at once and the waiting requests (the producer's sender, the fetcher) ask
    again at once: a loop measured at ~9,000 failed connects a second, each logged, using most of a core.
    The refresh is where every such retry meets, so that is where this waits: a failed refresh tells the
    connection the link is lost and reports its failure only once the connection's probe reached the
    cluster again or the connection's growing delay passed (see ``KafkaConnection.wait_for_link``). It then
    fails as before, so that the sender still expires the batches it cannot deliver.
    """
    # aiokafka has no public hook for this: its one metadata refresh routine is wrapped, per client instance.
    refresh = getattr(client, "_metadata_update", None)
    if refresh is None:  # another aiokafka release: its own retries, as before (log lines still rate-limited)
        log.debug("aiokafka %s has no _metadata_update: its clients retry at their own pace", aiokafka_version)
        return

    async def refresh_or_wait(cluster_metadata: Any, topics: Any) -> bool:
        if await refresh(cluster_metadata, topics):
            link.link_restored()
            return True
        if cluster_metadata is client.cluster:  # not a one-off lookup (fetch_all_metadata): its caller decides
            await link.wait_for_link(kafka_errors.KafkaConnectionError("no broker answered a metadata request"))
        return False

    client._metadata_update = refresh_or_wait  # noqa: SLF001


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, client: AiokafkaConsumer) -> None:
        self.client = client

    async def on_partitions_revoked(self, revoked: Any) -> None:
        partitions = [(tp.topic, tp.partition) for tp in revoked]
        if not partitions:
            return
        self.client.drop_held(revoked)  # records held back by idle() belong to the next owner now
        offsets = await self.client.on_revoke(partitions)
        if offsets:
            try:
                await self.client.commit(offsets)
            except kafka_errors.KafkaError as exc:
                log.warning("commit of revoked partitions failed (%s: %s); the next owner re-reads from the "
                            "previous commit", type(exc).__name__, exc)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.client.on_assign([(tp.topic, tp.partition) for tp in assigned])


class AiokafkaConsumer:
    """A consumer-group member with explicit commits."""

    def __init__(
        self,
        options: ClientOptions,
        settings: ConsumerSettings,
        on_assign: AssignHandler,
        on_revoke: RevokeHandler,
        revoke_timeout: float,
        link: LinkGate,
    ) -> None:
        self.settings = settings
        self.link = link
        self.on_assign = on_assign
        self.on_revoke = on_revoke
        self._kwargs = {**aiokafka_common(options), **aiokafka_consumer(settings)}
        self._consumer: AIOKafkaConsumer | None = None
        self._idling = False  # partitions paused by idle(), resumed by the next fetch
        self._held: dict[Any, list[Any]] = {}  # records a poll in idle() returned anyway

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(**self._kwargs)
        wait_on_link(consumer._client, self.link)  # noqa: SLF001 (the consumer's client has no public name)
        self._consumer = consumer
        await consumer.start()
        listener = _Listener(self)
        if self.settings.topic_pattern:
            consumer.subscribe(pattern=self.settings.topic_pattern, listener=listener)
        else:
            consumer.subscribe(topics=list(self.settings.topics), listener=listener)

    async def fetch(self, max_records: int, timeout: float) -> Fetched:
        consumer = self._consumer
        assert consumer is not None
        if self._idling:
            self._idling = False
            consumer.resume(*consumer.paused())
        if self._held:
            data, self._held = self._held, {}
        else:
            data = await consumer.getmany(timeout_ms=int(timeout * 1000), max_records=max_records)
        return _fetched(data)

    async def idle(self) -> None:
        """Stay in the group while the pipeline takes nothing: without a poll for max_poll_interval_ms the
        member would leave it (and its partitions would be revoked). Every assigned partition is paused,
        then polled; the next fetch resumes them."""
        consumer = self._consumer
        if consumer is None:
            return
        self._idling = True
        consumer.pause(*(consumer.assignment() - consumer.paused()))
        data = await consumer.getmany(timeout_ms=0)
        for tp, records in data.items():  # fetched before the pause took effect: kept, not lost
            self._held.setdefault(tp, []).extend(records)

    def drop_held(self, partitions: Any) -> None:
        """Forget records that a paused poll returned for ``partitions`` (revoked: the next owner reads them)."""
        for tp in partitions:
            self._held.pop(tp, None)

    async def commit(self, offsets: Mapping[Partition, int]) -> None:
        assert self._consumer is not None
        await self._consumer.commit({TopicPartition(t, p): o for (t, p), o in offsets.items()})

    def assignment(self) -> set[Partition]:
        if self._consumer is None:
            return set()
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def highwaters(self) -> dict[Partition, int]:
        consumer = self._consumer
        if consumer is None:
            return {}
        known = ((tp, consumer.highwater(tp)) for tp in consumer.assignment())
        return {(tp.topic, tp.partition): high for tp, high in known if high is not None}

    async def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()


_NO_HEADERS: list[tuple[str, bytes]] = []
_VALUE = operator.attrgetter("value")
_OFFSET = operator.attrgetter("offset")
_KEY = operator.attrgetter("key")
_TIMESTAMP = operator.attrgetter("timestamp")
_HEADERS = operator.attrgetter("headers")


def _as_list(headers: Any) -> list[tuple[str, bytes]]:
    """aiokafka's C record builder takes headers only as a list."""
    if not headers:
        return _NO_HEADERS
    return headers if type(headers) is list else list(headers)


def _others(members: range, state: _SendState) -> Sequence[int]:
    """``members`` without the records that already failed (cannot be encoded, too large)."""
    if not state.failures:
        return members
    failed = {i for i, _ in state.failures}
    return [i for i in members if i not in failed]


async def _hand_over(producer: AIOKafkaProducer, builder: Any, count: int, topic: str,
                     partition: int) -> asyncio.Future[Any]:
    """Give a complete batch to the producer, closed: aiokafka lets an open batch linger (``linger_ms``) for
    records that ``send()`` might add, and adds the next batch of a partition only once the previous one was
    taken. On one partition that made every batch wait out ``linger_ms`` in turn: 1,000 records per ~6 ms,
    half the throughput of three partitions, whose batches linger side by side. The records of a closed
    batch are all there: it goes with the next request. ``count``: the records added to it."""
    finish_batch(builder, count)
    future: asyncio.Future[Any] = await producer.send_batch(builder, topic, partition=partition)
    return future


def _open_batch(producer: AIOKafkaProducer) -> list[Any]:
    """``[builder, indexes of its records, how to add a record to it]`` for a new batch."""
    builder = producer.create_batch()
    return [builder, [], record_appender(builder)]


def _too_large() -> kafka_errors.KafkaError:
    return kafka_errors.MessageSizeTooLargeError("the record does not fit in a batch of max_batch_size bytes")


class _SendState:
    """Counts the batches of one ``send`` call and reports once all are settled."""

    __slots__ = ("done", "failures", "remaining", "sealed")

    def __init__(self, done: SendDone) -> None:
        self.done = done
        self.failures: list[tuple[int, BaseException]] = []
        self.remaining = 0
        self.sealed = False

    def watch(self, future: asyncio.Future[Any], members: Sequence[int]) -> None:
        self.remaining += 1

        def settled(fut: asyncio.Future[Any]) -> None:
            if fut.cancelled():
                error: BaseException | None = kafka_errors.KafkaTimeoutError("send cancelled")
            else:
                error = fut.exception()
            if error is not None:
                self.failures.extend((i, error) for i in members)
            self.remaining -= 1
            self._maybe_done()

        future.add_done_callback(settled)

    def seal(self) -> None:
        self.sealed = True
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self.sealed and self.remaining == 0:
            self.sealed = False  # report once
            self.done(self.failures)


class AiokafkaProducer:
    """Sends records with the batch API and reports broker acknowledgements per call."""

    def __init__(self, options: ClientOptions, settings: ProducerSettings, link: LinkGate) -> None:
        self._kwargs = {**aiokafka_common(options), **aiokafka_producer(settings)}
        self.link = link
        self._producer: AIOKafkaProducer | None = None
        self._turns = PartitionTurns()

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(**self._kwargs)
        wait_on_link(self._producer.client, self.link)
        try:
            await self._producer.start()
        except BaseException:
            await self.close()
            raise
        if not appends_directly(self._producer.create_batch()):
            log.info("aiokafka %s: batches are filled through BatchBuilder.append (its internals are not the "
                     "ones bspump knows; ~150 ns more per record)", aiokafka_version)

    async def send(self, out: OutBatch, done: SendDone) -> None:
        state = _SendState(done)
        if out.keys is None and out.topics is None:
            await self._send_unkeyed(out, state)
        else:
            await self._send_general(out, state)
        state.seal()

    async def _send_unkeyed(self, out: OutBatch, state: _SendState) -> None:
        """One topic, no keys: every record of the call goes to one partition, in as few batches as fit."""
        producer = self._producer
        assert producer is not None
        topic = out.topic
        values = out.values
        headers = out.headers
        encode = out.encode
        count = len(values)
        start = 0  # first record not yet handed to a sent batch
        try:
            partitions = sorted(await producer.partitions_for(topic))
            partition = partitions[self._turns.next(topic, len(partitions))]
            builder = producer.create_batch()
            append = record_appender(builder)
            added = 0  # records in ``builder``
            dumps = orjson.dumps
            inline_json = encode is encode_auto  # dicts as JSON without a Python call per record
            for index, value in enumerate(values):
                if encode is not None:
                    try:
                        if inline_json and type(value) is dict:
                            value = dumps(value, default=json_default)
                        elif not (inline_json and type(value) is bytes):
                            value = encode(value)
                    except (TypeError, ValueError) as exc:
                        state.failures.append((index, exc))
                        continue
                record_headers = _NO_HEADERS if headers is None else _as_list(headers[index])
                if append(added, None, None, value, record_headers) is None:
                    if added:
                        future = await _hand_over(producer, builder, added, topic, partition)
                        state.watch(future, _others(range(start, index), state))
                    builder = producer.create_batch()
                    append = record_appender(builder)
                    added = 0
                    start = index
                    if append(added, None, None, value, record_headers) is None:
                        state.failures.append((index, _too_large()))
                        start = index + 1
                        continue
                added += 1
            if added:
                future = await _hand_over(producer, builder, added, topic, partition)
                state.watch(future, _others(range(start, count), state))
        except Exception as exc:
            # No metadata (cluster unreachable, unknown topic): what was not handed over failed.
            failed = {i for i, _ in state.failures}
            state.failures.extend((i, exc) for i in range(start, count) if i not in failed)

    async def _send_general(self, out: OutBatch, state: _SendState) -> None:
        """Keys and/or several topics: partition each record, one open batch per topic partition."""
        producer = self._producer
        assert producer is not None
        values = out.values
        keys = out.keys
        headers = out.headers
        topics = out.topics
        encode = out.encode
        # (topic, partition) -> [builder, indexes of its records, how to add a record to it]
        open_batches: dict[Partition, list[Any]] = {}
        last_topic: str | None = None
        partitions: list[int] = []
        sticky = 0
        slot_key: Partition | None = None
        slot: list[Any] = []
        index = 0
        try:
            for index, value in enumerate(values):
                if encode is not None:
                    try:
                        value = encode(value)
                    except (TypeError, ValueError) as exc:
                        state.failures.append((index, exc))
                        continue
                topic = out.topic if topics is None else topics[index]
                key = None if keys is None else keys[index]
                record_headers = _NO_HEADERS if headers is None else _as_list(headers[index])
                if topic != last_topic:
                    partitions = sorted(await producer.partitions_for(topic))
                    sticky = self._turns.next(topic, len(partitions))
                    last_topic = topic
                if key is None:
                    partition = partitions[sticky]
                else:
                    partition = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
                if slot_key is None or slot_key[1] != partition or slot_key[0] != topic:
                    slot_key = (topic, partition)
                    found = open_batches.get(slot_key)
                    if found is None:
                        found = open_batches[slot_key] = _open_batch(producer)
                    slot = found
                if slot[2](len(slot[1]), None, key, value, record_headers) is None:
                    if slot[1]:
                        state.watch(await _hand_over(producer, slot[0], len(slot[1]), topic, partition), slot[1])
                    slot[:] = _open_batch(producer)
                    if slot[2](0, None, key, value, record_headers) is None:
                        state.failures.append((index, _too_large()))
                        continue
                slot[1].append(index)
            index = len(values)
            while open_batches:
                (topic, partition), (builder, members, _) = open_batches.popitem()
                if members:
                    state.watch(await _hand_over(producer, builder, len(members), topic, partition), members)
        except Exception as exc:
            unsent = [i for _, members, _ in open_batches.values() for i in members]
            unsent.extend(range(index, len(values)))
            failed = {i for i, _ in state.failures}
            state.failures.extend((i, exc) for i in sorted(set(unsent)) if i not in failed)

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()


def _fetched(data: Mapping[Any, list[Any]]) -> Fetched:
    """Values, contexts (kept as columns: :class:`KafkaContexts`) and next positions of one ``getmany``."""
    values: list[bytes | None] = []
    topics: list[str] = []
    partitions: list[int] = []
    offsets: list[int] = []
    keys: list[bytes | None] = []
    timestamps: list[int] = []
    headers: list[Any] = []
    positions: dict[Partition, int] = {}
    names = {tp.topic for tp, records in data.items() if records}
    single = next(iter(names)) if len(names) == 1 else None  # one topic: no topic column
    for tp, records in data.items():
        if not records:
            continue
        topic = tp.topic
        partition = tp.partition
        values.extend(map(_VALUE, records))
        if single is None:
            topics.extend([topic] * len(records))
        partitions.extend([partition] * len(records))
        first, last = records[0].offset, records[-1].offset
        # Offsets rise within a partition: a run as long as its span has no gap (no compaction, no
        # transaction markers), and range() makes it at C speed without reading each record.
        offsets.extend(range(first, last + 1) if last - first == len(records) - 1 else map(_OFFSET, records))
        keys.extend(map(_KEY, records))
        timestamps.extend(map(_TIMESTAMP, records))
        headers.extend(map(_HEADERS, records))
        positions[(topic, partition)] = last + 1
    contexts = KafkaContexts(single, None if single is not None else topics, partitions, offsets, keys,
                             timestamps, headers)
    return Fetched(values, contexts, positions)


class AiokafkaBackend:
    """``client = aiokafka``."""

    name = "aiokafka"

    def consumer(
        self,
        options: ClientOptions,
        settings: ConsumerSettings,
        on_assign: AssignHandler,
        on_revoke: RevokeHandler,
        revoke_timeout: float,
        link: LinkGate,
    ) -> AiokafkaConsumer:
        return AiokafkaConsumer(options, settings, on_assign, on_revoke, revoke_timeout, link)

    def producer(self, options: ClientOptions, settings: ProducerSettings, link: LinkGate) -> AiokafkaProducer:
        return AiokafkaProducer(options, settings, link)

    def limit_logs(self, interval: float) -> None:
        """aiokafka logs every failed connect and refresh (at ERROR) from the loggers below ``aiokafka``."""
        limit_logger_rate("aiokafka", interval)

    async def probe(self, options: ClientOptions, timeout: float) -> None:
        """Fetch cluster metadata once: proves the address, TLS and credentials work."""
        kwargs = aiokafka_common(options)
        client = AIOKafkaClient(**kwargs)
        try:
            await asyncio.wait_for(client.bootstrap(), timeout)
        finally:
            await client.close()

    def classify(self, error: BaseException) -> ErrorKind:
        """Link for connection, node and time-out errors (and any ``OSError``), transient for the other
        errors aiokafka marks retriable (no leader, rebalance in progress...), permanent otherwise."""
        if isinstance(error, (*_LINK_ERRORS, OSError)):
            return ErrorKind.LINK
        if isinstance(error, kafka_errors.KafkaError) and getattr(error, "retriable", False):
            return ErrorKind.TRANSIENT
        return ErrorKind.PERMANENT


BACKEND = AiokafkaBackend()
