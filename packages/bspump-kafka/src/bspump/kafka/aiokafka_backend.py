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
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka import errors as kafka_errors
from aiokafka.client import AIOKafkaClient
from aiokafka.partitioner import murmur2

from .backend import (
    AssignHandler,
    Fetched,
    OutRecord,
    Partition,
    RevokeHandler,
    SendDone,
)
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


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, client: AiokafkaConsumer) -> None:
        self.client = client

    async def on_partitions_revoked(self, revoked: Any) -> None:
        partitions = [(tp.topic, tp.partition) for tp in revoked]
        if not partitions:
            return
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
    ) -> None:
        self.settings = settings
        self.on_assign = on_assign
        self.on_revoke = on_revoke
        self._kwargs = {**aiokafka_common(options), **aiokafka_consumer(settings)}
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(**self._kwargs)
        self._consumer = consumer
        await consumer.start()
        listener = _Listener(self)
        if self.settings.topic_pattern:
            consumer.subscribe(pattern=self.settings.topic_pattern, listener=listener)
        else:
            consumer.subscribe(topics=list(self.settings.topics), listener=listener)

    async def fetch(self, max_records: int, timeout: float) -> Fetched:
        assert self._consumer is not None
        data = await self._consumer.getmany(timeout_ms=int(timeout * 1000), max_records=max_records)
        values: list[bytes | None] = []
        contexts: list[dict[str, Any]] = []
        positions: dict[Partition, int] = {}
        for tp, records in data.items():
            if not records:
                continue
            topic = tp.topic
            partition = tp.partition
            values.extend([r.value for r in records])
            contexts.extend([
                {"topic": topic, "partition": partition, "offset": r.offset, "key": r.key,
                 "timestamp": r.timestamp, "headers": r.headers}
                for r in records
            ])
            positions[(topic, partition)] = records[-1].offset + 1
        return Fetched(values, contexts, positions)

    async def commit(self, offsets: Mapping[Partition, int]) -> None:
        assert self._consumer is not None
        await self._consumer.commit({TopicPartition(t, p): o for (t, p), o in offsets.items()})

    def assignment(self) -> set[Partition]:
        if self._consumer is None:
            return set()
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    async def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()


class _SendState:
    """Counts the batches of one ``send`` call and reports once all are settled."""

    __slots__ = ("done", "failures", "remaining", "sealed")

    def __init__(self, done: SendDone) -> None:
        self.done = done
        self.failures: list[tuple[int, BaseException]] = []
        self.remaining = 0
        self.sealed = False

    def watch(self, future: asyncio.Future[Any], members: list[int]) -> None:
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

    def __init__(self, options: ClientOptions, settings: ProducerSettings) -> None:
        self._kwargs = {**aiokafka_common(options), **aiokafka_producer(settings)}
        self._producer: AIOKafkaProducer | None = None
        self._sticky: dict[str, int] = {}

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(**self._kwargs)
        try:
            await self._producer.start()
        except BaseException:
            await self.close()
            raise

    async def send(self, records: list[OutRecord], done: SendDone) -> None:
        producer = self._producer
        assert producer is not None
        state = _SendState(done)
        groups: dict[Partition, list[int]] = {}
        partitions_of: dict[str, list[int]] = {}
        try:
            for index, record in enumerate(records):
                topic = record[0]
                partitions = partitions_of.get(topic)
                if partitions is None:
                    partitions = sorted(await producer.partitions_for(topic))
                    partitions_of[topic] = partitions
                    self._sticky[topic] = (self._sticky.get(topic, -1) + 1) % len(partitions)
                key = record[1]
                if key is None:
                    partition = partitions[self._sticky[topic]]
                else:
                    partition = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
                members = groups.get((topic, partition))
                if members is None:
                    groups[(topic, partition)] = [index]
                else:
                    members.append(index)
        except kafka_errors.KafkaError as exc:
            # No metadata for a topic (broker unreachable, unknown topic): nothing of this call was sent.
            state.failures.extend((i, exc) for i in range(len(records)))
            state.seal()
            return
        pending = list(groups.items())
        try:
            while pending:
                (topic, partition), members = pending.pop(0)
                builder = producer.create_batch()
                batch_members: list[int] = []
                for index in members:
                    _, key, value, headers = records[index]
                    if builder.append(key=key, value=value, timestamp=None, headers=headers or []) is None:
                        if batch_members:
                            future = await producer.send_batch(builder, topic, partition=partition)
                            state.watch(future, batch_members)
                        builder = producer.create_batch()
                        batch_members = []
                        if builder.append(key=key, value=value, timestamp=None, headers=headers or []) is None:
                            state.failures.append((index, kafka_errors.MessageSizeTooLargeError(
                                f"the record does not fit in a batch of max_batch_size bytes "
                                f"({builder.size()} bytes empty)")))
                            continue
                    batch_members.append(index)
                if batch_members:
                    future = await producer.send_batch(builder, topic, partition=partition)
                    state.watch(future, batch_members)
        except kafka_errors.KafkaError as exc:
            state.failures.extend((i, exc) for _, members in pending for i in members)
            state.failures.extend((i, exc) for i in batch_members)
        state.seal()

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()


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
    ) -> AiokafkaConsumer:
        return AiokafkaConsumer(options, settings, on_assign, on_revoke, revoke_timeout)

    def producer(self, options: ClientOptions, settings: ProducerSettings) -> AiokafkaProducer:
        return AiokafkaProducer(options, settings)

    async def probe(self, options: ClientOptions, timeout: float) -> None:
        """Fetch cluster metadata once: proves the address, TLS and credentials work."""
        kwargs = aiokafka_common(options)
        client = AIOKafkaClient(**kwargs)
        try:
            await asyncio.wait_for(client.bootstrap(), timeout)
        finally:
            await client.close()

    def is_transient(self, error: BaseException) -> bool:
        if isinstance(error, kafka_errors.KafkaError):
            return bool(getattr(error, "retriable", False)) or isinstance(error, _LINK_ERRORS)
        return isinstance(error, OSError | TimeoutError)

    def is_link_error(self, error: BaseException) -> bool:
        return isinstance(error, _LINK_ERRORS | OSError)


BACKEND = AiokafkaBackend()
