"""The confluent-kafka backend (``client = confluent``): librdkafka, several times aiokafka's throughput.

confluent-kafka's calls block and report through callbacks, so the event loop never calls a blocking one:

- each consumer runs ``consume``, commits and ``close`` in a single worker thread of its own (librdkafka
  calls rebalance callbacks from inside ``consume``; they hop to the event loop with
  ``run_coroutine_threadsafe`` to wait for in-flight events, then commit synchronously in that thread);
- each producer's ``produce`` only enqueues (it never blocks); a poller thread serves delivery reports and
  tells the event loop once every record of one ``send`` is settled (one ``call_soon_threadsafe`` per send,
  not per record).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from .backend import (
    AssignHandler,
    Fetched,
    OutBatch,
    Partition,
    RevokeHandler,
    SendDone,
)
from .options import (
    ClientOptions,
    ConsumerSettings,
    ProducerSettings,
    confluent_common,
    confluent_consumer,
    confluent_producer,
)

log = logging.getLogger("bspump.kafka")
librdkafka_log = logging.getLogger("bspump.kafka.librdkafka")

T = TypeVar("T")

_LINK_CODES = {
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._MSG_TIMED_OUT,
    KafkaError._TIMED_OUT,
    KafkaError._RESOLVE,
}
_TRANSIENT_CODES = _LINK_CODES | {
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_ENOUGH_REPLICAS,
    KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    KafkaError._QUEUE_FULL,
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR,
}


def _kafka_error(error: BaseException) -> KafkaError | None:
    if isinstance(error, KafkaException) and error.args and isinstance(error.args[0], KafkaError):
        return error.args[0]
    return None


class ConfluentConsumer:
    """A consumer-group member whose blocking calls all run in one worker thread."""

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
        self.revoke_timeout = revoke_timeout
        self._conf = {**confluent_common(options), **confluent_consumer(settings)}
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"kafka-consumer-{settings.group_id}")
        self._consumer: Consumer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = self._loop
        assert loop is not None
        return await loop.run_in_executor(self._executor, fn, *args)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._call(self._start)

    def _start(self) -> None:
        consumer = Consumer(self._conf, logger=librdkafka_log)
        self._consumer = consumer
        pattern = self.settings.topic_pattern
        # librdkafka treats a topic starting with "^" as a regular expression.
        topics = [pattern if pattern.startswith("^") else f"^{pattern}"] if pattern else list(self.settings.topics)
        consumer.subscribe(topics, on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost)

    # Rebalance callbacks: called by librdkafka inside consume()/close(), in the worker thread.
    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self.on_assign, [(p.topic, p.partition) for p in partitions])

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._give_up(consumer, partitions, commit=True)

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._give_up(consumer, partitions, commit=False)

    def _give_up(self, consumer: Consumer, partitions: list[TopicPartition], commit: bool) -> None:
        parts = [(p.topic, p.partition) for p in partitions]
        if not parts or self._loop is None or self._loop.is_closed():
            return
        future = asyncio.run_coroutine_threadsafe(self.on_revoke(parts), self._loop)
        try:
            offsets = future.result(self.revoke_timeout + 5)
        except Exception as exc:
            log.warning("waiting for in-flight events of revoked partitions failed: %s", exc)
            return
        if offsets and commit:
            try:
                consumer.commit(offsets=_topic_partitions(offsets), asynchronous=False)
            except KafkaException as exc:
                log.warning("commit of revoked partitions failed (%s); the next owner re-reads from the "
                            "previous commit", exc)

    async def fetch(self, max_records: int, timeout: float) -> Fetched:
        consumer = self._consumer
        assert consumer is not None
        messages = await self._call(consumer.consume, max_records, timeout)
        values: list[bytes | None] = []
        contexts: list[dict[str, Any]] = []
        positions: dict[Partition, int] = {}
        if not messages:
            return Fetched(values, contexts, positions)
        if any(m.error() is not None for m in messages):
            messages = self._drop_errors(messages)
        values = [m.value() for m in messages]
        contexts = [
            {"topic": m.topic(), "partition": m.partition(), "offset": m.offset(), "key": m.key(),
             "timestamp": m.timestamp()[1], "headers": m.headers() or ()}
            for m in messages
        ]
        for context in contexts:  # last offset per partition wins: consume() keeps partition order
            positions[(context["topic"], context["partition"])] = context["offset"] + 1
        return Fetched(values, contexts, positions)

    def _drop_errors(self, messages: list[Any]) -> list[Any]:
        kept = []
        for message in messages:
            error = message.error()
            if error is None:
                kept.append(message)
            elif error.code() == KafkaError._PARTITION_EOF:
                continue
            elif error.fatal():
                raise KafkaException(error)
            else:
                log.warning("consumer error: %s", error)
        return kept

    async def commit(self, offsets: Mapping[Partition, int]) -> None:
        consumer = self._consumer
        assert consumer is not None
        await self._call(functools.partial(consumer.commit, offsets=_topic_partitions(offsets),
                                           asynchronous=False))

    def assignment(self) -> set[Partition]:
        if self._consumer is None:
            return set()
        return {(p.topic, p.partition) for p in self._consumer.assignment()}

    async def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        try:
            if consumer is not None:
                await self._call(consumer.close)  # queued behind a running consume(); leaves the group
        finally:
            self._executor.shutdown(wait=False)


class _SendState:
    """Delivery reports of one ``send`` call; updated only by the poller thread."""

    __slots__ = ("done", "expected", "failures", "settled")

    def __init__(self, done: SendDone) -> None:
        self.done = done
        self.failures: list[tuple[int, BaseException]] = []
        self.settled = 0
        self.expected = -1  # set once every record is enqueued

    def report(self, index: int, error: KafkaError | None, message: Any) -> None:
        if error is not None:
            self.failures.append((index, KafkaException(error)))
        self.settled += 1


class ConfluentProducer:
    """``produce`` enqueues from the event loop; a poller thread serves delivery reports."""

    def __init__(self, options: ClientOptions, settings: ProducerSettings) -> None:
        self._conf = {**confluent_common(options), **confluent_producer(options, settings)}
        self._timeout = max(options.request_timeout_ms / 1000, 1.0)
        self._producer: Producer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: deque[_SendState] = deque()
        self._running = False
        self._poller: threading.Thread | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        producer = Producer(self._conf, logger=librdkafka_log)
        # Fails (KafkaException) when the cluster cannot be reached with these settings.
        await asyncio.to_thread(producer.list_topics, None, self._timeout)
        self._producer = producer
        self._running = True
        self._poller = threading.Thread(target=self._poll, name="kafka-producer-poll", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        producer = self._producer
        assert producer is not None
        while self._running:
            producer.poll(0.05)
            self._report_settled()

    def _report_settled(self) -> None:
        pending = self._pending
        loop = self._loop
        assert loop is not None
        # Sends settle in roughly the order they were made; reporting in order (stopping at the first
        # unsettled one) only delays some acknowledgements a little, and `pending` is appended to
        # concurrently by the event loop, so it is only ever popped from the left here.
        while pending and pending[0].settled >= pending[0].expected >= 0:
            state = pending.popleft()
            if not loop.is_closed():
                loop.call_soon_threadsafe(state.done, state.failures)

    async def send(self, out: OutBatch, done: SendDone) -> None:
        producer = self._producer
        assert producer is not None
        state = _SendState(done)
        report = state.report
        produce = producer.produce
        topics = out.topics
        keys = out.keys
        headers = out.headers
        encode = out.encode
        topic = out.topic
        enqueued = 0
        for index, value in enumerate(out.values):
            if encode is not None:
                try:
                    value = encode(value)
                except (TypeError, ValueError) as exc:
                    state.failures.append((index, exc))
                    continue
            if topics is not None:
                topic = topics[index]
            key = None if keys is None else keys[index]
            record_headers = None if headers is None else headers[index]
            callback = functools.partial(report, index)
            while True:
                try:
                    if record_headers:
                        produce(topic, value, key, on_delivery=callback, headers=list(record_headers))
                    else:
                        produce(topic, value, key, on_delivery=callback)
                    enqueued += 1
                except BufferError:  # librdkafka's queue is full: let the poller drain it
                    await asyncio.sleep(0.005)
                    continue
                except KafkaException as exc:
                    state.failures.append((index, exc))
                except (TypeError, ValueError) as exc:
                    state.failures.append((index, exc))
                break
        state.expected = enqueued
        if enqueued == 0:
            done(state.failures)
            return
        self._pending.append(state)

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        self._running = False
        if self._poller is not None:
            await asyncio.to_thread(self._poller.join)
            self._poller = None
        if producer is not None:
            remaining = await asyncio.to_thread(producer.flush, self._timeout)
            if remaining:
                log.warning("%d messages were still undelivered when the producer closed", remaining)
            self._report_settled()


class ConfluentBackend:
    """``client = confluent``."""

    name = "confluent"

    def consumer(
        self,
        options: ClientOptions,
        settings: ConsumerSettings,
        on_assign: AssignHandler,
        on_revoke: RevokeHandler,
        revoke_timeout: float,
    ) -> ConfluentConsumer:
        return ConfluentConsumer(options, settings, on_assign, on_revoke, revoke_timeout)

    def producer(self, options: ClientOptions, settings: ProducerSettings) -> ConfluentProducer:
        return ConfluentProducer(options, settings)

    async def probe(self, options: ClientOptions, timeout: float) -> None:
        """Fetch cluster metadata once (in a thread): proves the address, TLS and credentials work."""
        admin = AdminClient(confluent_common(options), logger=librdkafka_log)
        await asyncio.to_thread(admin.list_topics, None, timeout)

    def is_transient(self, error: BaseException) -> bool:
        kafka_error = _kafka_error(error)
        if kafka_error is None:
            return isinstance(error, OSError | TimeoutError)
        return bool(kafka_error.retriable()) or kafka_error.code() in _TRANSIENT_CODES

    def is_link_error(self, error: BaseException) -> bool:
        kafka_error = _kafka_error(error)
        if kafka_error is None:
            return isinstance(error, OSError)
        return kafka_error.code() in _LINK_CODES


def _topic_partitions(offsets: Mapping[Partition, int]) -> list[TopicPartition]:
    return [TopicPartition(topic, partition, offset) for (topic, partition), offset in offsets.items()]


BACKEND = ConfluentBackend()
