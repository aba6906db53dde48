"""The confluent-kafka backend (``client = confluent``): librdkafka, several times aiokafka's throughput.

confluent-kafka's calls block and report through callbacks, so the event loop never calls a blocking one:

- each consumer runs ``consume`` and ``close`` in a thread of its own that reads ahead a couple of batches
  (librdkafka calls rebalance callbacks from inside ``consume``; they hop to the event loop with
  ``run_coroutine_threadsafe`` to wait for in-flight events, then commit synchronously in that thread);
- each producer's ``produce`` only enqueues (it never blocks); the event loop serves delivery reports with
  ``poll(0)`` every millisecond while deliveries are outstanding.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
from collections import deque
from collections.abc import Mapping
from typing import Any

import orjson
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
from .codec import encode_auto, json_default
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
    """A consumer-group member whose blocking calls run in a thread of its own.

    The thread keeps consuming ahead, at most ``PREFETCH`` batches, and hands them to the event loop, so
    that librdkafka is drained while the pipeline processes the previous batch (a round trip to a worker
    per batch left the loop idle for half of the time). librdkafka calls the rebalance callbacks from inside
    ``consume()`` in that thread; they hop to the event loop to drop prefetched batches of the revoked
    partitions and to wait for their in-flight events, then commit synchronously.
    """

    PREFETCH = 2
    POLL_TIMEOUT = 0.05

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
        self._consumer: Consumer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._space = threading.Semaphore(self.PREFETCH)
        self._ready: deque[Fetched] = deque()
        self._arrived = asyncio.Event()
        self._failure: BaseException | None = None
        self._max_records = 1000
        # confluent-kafka serialises calls on one Consumer: a call from the loop while the thread sits in
        # consume() would wait for it. So commits travel to the thread, and the assignment is tracked here.
        self._commands: queue.SimpleQueue[tuple[list[TopicPartition], concurrent.futures.Future[None]]] = (
            queue.SimpleQueue()
        )
        self._assignment: set[Partition] = set()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._consumer = await asyncio.to_thread(self._create)
        self._thread = threading.Thread(target=self._run, name=f"kafka-consumer-{self.settings.group_id}",
                                        daemon=True)
        self._thread.start()

    def _create(self) -> Consumer:
        consumer = Consumer(self._conf, logger=librdkafka_log)
        pattern = self.settings.topic_pattern
        # librdkafka treats a topic starting with "^" as a regular expression.
        topics = [pattern if pattern.startswith("^") else f"^{pattern}"] if pattern else list(self.settings.topics)
        consumer.subscribe(topics, on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost)
        return consumer

    def _run(self) -> None:
        """The consumer thread: consume ahead while there is room, then leave the group."""
        consumer = self._consumer
        loop = self._loop
        assert consumer is not None and loop is not None
        try:
            while not self._stopping.is_set():
                self._run_commands(consumer)
                if not self._space.acquire(timeout=self.POLL_TIMEOUT):
                    continue
                messages = consumer.consume(self._max_records, self.POLL_TIMEOUT)
                fetched = self._unpack(messages) if messages else None
                if fetched is None or not fetched.values:
                    self._space.release()
                    continue
                # Unpacked here, while the loop is busy with the previous batch.
                loop.call_soon_threadsafe(self._arrive, fetched)
        except BaseException as exc:  # a fatal client error: the source sees it on its next fetch
            if not loop.is_closed():
                loop.call_soon_threadsafe(self._fail, exc)
        finally:
            self._run_commands(consumer)
            consumer.close()  # leaves the group; runs the revoke callback one last time

    def _run_commands(self, consumer: Consumer) -> None:
        while True:
            try:
                offsets, future = self._commands.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(None)

    def _arrive(self, fetched: Fetched) -> None:
        self._ready.append(fetched)
        self._arrived.set()

    def _fail(self, error: BaseException) -> None:
        self._failure = error
        self._arrived.set()

    # Rebalance callbacks: called by librdkafka inside consume()/close(), in the consumer thread.
    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assert self._loop is not None
        parts = [(p.topic, p.partition) for p in partitions]
        self._assignment = self._assignment | set(parts)
        self._loop.call_soon_threadsafe(self.on_assign, parts)

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._give_up(consumer, partitions, commit=True)

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._give_up(consumer, partitions, commit=False)

    def _give_up(self, consumer: Consumer, partitions: list[TopicPartition], commit: bool) -> None:
        parts = [(p.topic, p.partition) for p in partitions]
        self._assignment = self._assignment - set(parts)
        if not parts or self._loop is None or self._loop.is_closed():
            return
        future = asyncio.run_coroutine_threadsafe(self._release(parts), self._loop)
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

    async def _release(self, partitions: list[Partition]) -> dict[Partition, int]:
        """On the loop: forget prefetched messages of revoked partitions, then let the source drain them."""
        gone = set(partitions)
        kept: deque[Fetched] = deque()
        for fetched in self._ready:
            keep = [i for i, c in enumerate(fetched.contexts) if (c["topic"], c["partition"]) not in gone]
            if keep:
                kept.append(Fetched([fetched.values[i] for i in keep], [fetched.contexts[i] for i in keep],
                                    {p: o for p, o in fetched.positions.items() if p not in gone}))
            else:
                self._space.release()
        self._ready = kept
        return await self.on_revoke(partitions)

    async def fetch(self, max_records: int, timeout: float) -> Fetched:
        self._max_records = max_records
        if not self._ready and self._failure is None:
            self._arrived.clear()
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that
            # arrives as the event is set, and the source would then never stop.
            try:
                async with asyncio.timeout(timeout):
                    await self._arrived.wait()
            except TimeoutError:
                pass
        if self._failure is not None:
            raise self._failure
        if not self._ready:
            return Fetched([], [], {})
        fetched = self._ready.popleft()
        self._space.release()
        return fetched

    def _unpack(self, messages: list[Any]) -> Fetched:
        """Values, contexts and next positions of consumed messages (in the consumer thread)."""
        if any(m.error() is not None for m in messages):
            messages = self._drop_errors(messages)
        values = [m.value() for m in messages]
        contexts = [
            {"topic": m.topic(), "partition": m.partition(), "offset": m.offset(), "key": m.key(),
             "timestamp": m.timestamp()[1], "headers": m.headers() or ()}
            for m in messages
        ]
        positions: dict[Partition, int] = {}
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
        if self._thread is None or not self._thread.is_alive():
            raise KafkaException(KafkaError(KafkaError._STATE, "the consumer is closed"))
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._commands.put((_topic_partitions(offsets), future))
        await asyncio.wrap_future(future)

    def assignment(self) -> set[Partition]:
        return set(self._assignment)

    async def close(self) -> None:
        thread, self._thread = self._thread, None
        self._stopping.set()
        if thread is not None:
            await asyncio.to_thread(thread.join)  # the thread closes the consumer (leaves the group)
        elif self._consumer is not None:
            await asyncio.to_thread(self._consumer.close)
        self._consumer = None


class _SendState:
    """Delivery reports of one ``send`` call; librdkafka calls it from ``poll`` on the event loop.

    One callable per call rather than one closure per record: a failed record is found again by its
    encoded value and key (only when something failed, which is rare), not by an index bound per record.
    """

    __slots__ = ("done", "expected", "failures", "out", "refused", "settled")

    def __init__(self, done: SendDone, out: OutBatch) -> None:
        self.done = done
        self.out = out
        self.failures: list[tuple[int, BaseException]] = []
        self.refused: list[tuple[bytes | None, bytes | None, KafkaError]] = []
        self.settled = 0
        self.expected = -1  # set once every record is enqueued

    def __call__(self, error: KafkaError | None, message: Any) -> None:
        if error is not None:
            self.refused.append((message.value(), message.key(), error))
        self.settled += 1
        if self.settled == self.expected:
            self.finish()

    def finish(self) -> None:
        if self.refused:
            self.failures.extend(self._locate())
        self.done(self.failures)

    def _locate(self) -> list[tuple[int, BaseException]]:
        out = self.out
        by_record: dict[tuple[bytes | None, bytes | None], list[int]] = {}
        not_sent = {index for index, _ in self.failures}  # these never reached librdkafka
        for index in range(len(out.values)):
            if index in not_sent:
                continue
            value = out.values[index]
            if out.encode is not None:
                value = out.encode(value)
            key = None if out.keys is None else out.keys[index]
            by_record.setdefault((value, key), []).append(index)
        located: list[tuple[int, BaseException]] = []
        for value, key, error in self.refused:
            candidates = by_record.get((value, key))
            if candidates:
                located.append((candidates.pop(0), KafkaException(error)))
        return located


class ConfluentProducer:
    """``produce`` only enqueues; the event loop itself serves delivery reports with ``poll(0)``.

    Polling from the loop (rather than from a thread of its own) keeps the reports, and the
    acknowledgements they trigger, on the loop's thread without a second thread contending for the GIL.
    """

    #: Seconds between polls while deliveries are outstanding.
    POLL_INTERVAL = 0.001

    def __init__(self, options: ClientOptions, settings: ProducerSettings) -> None:
        self._conf = {**confluent_common(options), **confluent_producer(options, settings)}
        self._timeout = max(options.request_timeout_ms / 1000, 1.0)
        self._producer: Producer | None = None
        self._outstanding = 0
        self._wake = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None

    async def start(self) -> None:
        producer = Producer(self._conf, logger=librdkafka_log)
        # Fails (KafkaException) when the cluster cannot be reached with these settings.
        await asyncio.to_thread(producer.list_topics, None, self._timeout)
        self._producer = producer
        self._poller = asyncio.create_task(self._poll(producer), name="kafka-producer-poll")

    async def _poll(self, producer: Producer) -> None:
        while True:
            if len(producer) == 0:
                self._wake.clear()
                await self._wake.wait()
            producer.poll(0)
            await asyncio.sleep(self.POLL_INTERVAL)

    async def send(self, out: OutBatch, done: SendDone) -> None:
        producer = self._producer
        assert producer is not None
        state = _SendState(done, out)
        failures = state.failures
        produce = producer.produce
        topics = out.topics
        keys = out.keys
        headers = out.headers
        encode = out.encode
        topic = out.topic
        dumps = orjson.dumps
        inline_json = encode is encode_auto  # dicts as JSON without a Python call per record
        enqueued = 0
        for index, value in enumerate(out.values):
            if encode is not None:
                try:
                    if inline_json and type(value) is dict:
                        value = dumps(value, default=json_default)
                    elif not (inline_json and type(value) is bytes):
                        value = encode(value)
                except (TypeError, ValueError) as exc:
                    failures.append((index, exc))
                    continue
            if topics is not None:
                topic = topics[index]
            key = None if keys is None else keys[index]
            record_headers: list[Any] | None = list(headers[index] or ()) if headers is not None else None
            try:
                produce(topic, value, key, on_delivery=state, headers=record_headers)
            except BufferError:  # librdkafka's queue is full: serve reports, let it drain, try again
                if not await self._produce_when_room(producer, (topic, value, key), record_headers, state, index):
                    continue
            except (KafkaException, TypeError, ValueError) as exc:
                failures.append((index, exc))
                continue
            enqueued += 1
        if enqueued == 0:
            done(failures)
            return
        state.expected = enqueued
        if state.settled == enqueued:  # every report already arrived during a BufferError poll
            state.finish()
        self._wake.set()

    async def _produce_when_room(
        self,
        producer: Producer,
        record: tuple[str, bytes | None, bytes | None],
        headers: list[Any] | None,
        state: _SendState,
        index: int,
    ) -> bool:
        """Retry one record until librdkafka's queue has room; False if it was refused for good."""
        while True:
            producer.poll(0)
            await asyncio.sleep(self.POLL_INTERVAL)
            try:
                producer.produce(*record, on_delivery=state, headers=headers)
            except BufferError:
                continue
            except (KafkaException, TypeError, ValueError) as exc:
                state.failures.append((index, exc))
                return False
            return True

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
        if producer is None:
            return
        # Flush by polling from the loop, so that the last reports also arrive on the loop's thread.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        producer.poll(0)
        while len(producer) and loop.time() < deadline:
            await asyncio.sleep(0.005)
            producer.poll(0)
        if len(producer):
            log.warning("%d messages were still undelivered when the producer closed", len(producer))


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
