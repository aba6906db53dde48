"""The confluent-kafka backend (``client = confluent``): librdkafka behind the same classes and options.

confluent-kafka's calls block and report through callbacks, so the event loop never calls a blocking one:

- each consumer runs ``consume``, ``commit`` and ``close`` in a thread of its own that reads ahead a couple
  of batches (librdkafka calls rebalance callbacks from inside ``consume``; they hop to the event loop with
  ``run_coroutine_threadsafe`` to wait for in-flight events, then commit synchronously in that thread);
- each producer's ``produce_batch`` / ``produce`` only enqueue (they never block); the event loop serves
  delivery reports with ``poll(0)`` every millisecond while deliveries are outstanding.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from bspump.codec import json_default

from .backend import (
    AssignHandler,
    Fetched,
    OutBatch,
    Partition,
    PartitionTurns,
    RevokeHandler,
    SendDone,
)
from .codec import encode_auto
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
    KafkaError._UNKNOWN_PARTITION,  # a partition chosen from stale metadata: sent again, partitioned anew
}


def _kafka_error(error: BaseException) -> KafkaError | None:
    if isinstance(error, KafkaException) and error.args and isinstance(error.args[0], KafkaError):
        return error.args[0]
    return None


class ConfluentConsumer:
    """A consumer-group member whose blocking calls run in a thread of its own.

    The thread keeps consuming ahead, at most ``PREFETCH`` message lists, which the event loop unpacks when
    it takes them, so that librdkafka is drained while the pipeline processes the previous batch (a round
    trip to a worker per batch left the loop idle for half of the time). The thread also runs the commits,
    reads librdkafka's cached watermarks for the lag, and, while the loop takes nothing (backpressure),
    polls with the assignment paused so that the member stays in its group. librdkafka calls the rebalance
    callbacks from inside ``consume()`` in that thread; they hop to the event loop to drop read-ahead
    messages of the revoked partitions and to wait for their in-flight events, then commit synchronously.
    Consuming on the loop thread measured ~5 % faster, but there a revocation could not wait for the
    in-flight events, and every rebalance would deliver them again.
    """

    PREFETCH = 2
    #: Seconds between reads of librdkafka's cached high watermarks (for the source's lag).
    WATERMARK_INTERVAL = 1.0
    #: While its read-ahead batches wait this long, the thread pauses the assignment and polls, so that
    #: librdkafka does not leave the group for want of a poll within max.poll.interval.ms.
    KEEP_ALIVE = 1.0
    #: Longest wait in ``consume``: how late a commit or a stop can be noticed while no data arrives.
    POLL_TIMEOUT = 0.01

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
        # Shared with the consumer thread, under _wake: the message lists it consumed and the loop has not
        # taken yet (_ready), the commits it has to run, whether to stop, and whether the loop waits for data
        # (only then does the thread wake it: no self-pipe write per batch while the loop is busy). The thread
        # sleeps on _wake while PREFETCH lists wait and it has nothing else to do, so a commit or a stop
        # never waits for a timeout.
        self._wake = threading.Condition()
        self._stopping = False
        self._loop_waits = False
        # confluent-kafka serialises calls on one Consumer: a call from the loop while the thread sits in
        # consume() would wait for it. So commits travel to the thread, and the assignment is tracked here.
        self._commands: list[tuple[list[TopicPartition], concurrent.futures.Future[None]]] = []
        self._ready: deque[list[Any]] = deque()
        self._arrived = asyncio.Event()
        self._failure: BaseException | None = None
        self._max_records = 1000
        # Every message comes from this topic (one topic, no pattern): no topic() call per message.
        self._single_topic = settings.topics[0] if len(settings.topics) == 1 and not settings.topic_pattern else None
        self._assignment: set[Partition] = set()
        self._highwaters: dict[Partition, int] = {}  # replaced by the thread about once a second

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
        """The consumer thread: consume ahead while there is room, run commits in between, then leave."""
        consumer = self._consumer
        loop = self._loop
        assert consumer is not None and loop is not None
        wake = self._wake
        next_watermarks = time.monotonic()
        last_poll = time.monotonic()
        paused: list[TopicPartition] = []
        try:
            while True:
                now = time.monotonic()
                if now >= next_watermarks:
                    self._highwaters = _cached_highwaters(consumer, self._assignment)
                    next_watermarks = now + self.WATERMARK_INTERVAL
                with wake:
                    while not self._stopping and not self._commands and len(self._ready) >= self.PREFETCH:
                        if not wake.wait(max(next_watermarks - time.monotonic(), 0.0)):
                            break  # time to read the watermarks again (the loop may be throttled for long)
                    if self._stopping:
                        break
                    commands, self._commands = self._commands, []
                if commands:
                    _run_commits(consumer, commands)
                    continue  # a stop may have arrived meanwhile
                if len(self._ready) >= self.PREFETCH:
                    # Woken by the clock: the loop takes nothing (backpressure). Stay in the group.
                    if time.monotonic() - last_poll >= self.KEEP_ALIVE:
                        paused = _paused_poll(consumer, paused, self._assignment, self._keep)
                        last_poll = time.monotonic()
                    continue
                if paused:
                    _resume(consumer, paused, self._assignment)
                    paused = []
                messages = consumer.consume(self._max_records, self.POLL_TIMEOUT)
                last_poll = time.monotonic()
                if not messages:
                    continue
                # Unpacked on the loop, not here: this thread then holds the GIL only while consume() builds
                # the Message objects (unpacking here measured ~10 % slower, from contention for the GIL).
                with wake:
                    self._ready.append(messages)
                    loop_waits, self._loop_waits = self._loop_waits, False
                if loop_waits:
                    loop.call_soon_threadsafe(self._arrived.set)
        except BaseException as exc:  # a fatal client error: the source sees it on its next fetch
            if not loop.is_closed():
                loop.call_soon_threadsafe(self._fail, exc)
        finally:
            with wake:
                commands, self._commands = self._commands, []
            _run_commits(consumer, commands)
            consumer.close()  # leaves the group; runs the revoke callback one last time

    def _keep(self, messages: list[Any]) -> None:
        """In the consumer thread: messages a paused poll returned anyway join the read-ahead."""
        with self._wake:
            self._ready.append(messages)

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
        with self._wake:  # the thread is inside consume() (in this callback), but keep to the rule
            kept = [[m for m in messages if (m.topic(), m.partition()) not in gone] for messages in self._ready]
            self._ready = deque(messages for messages in kept if messages)
            self._wake.notify()
        return await self.on_revoke(partitions)

    async def fetch(self, max_records: int, timeout: float) -> Fetched:
        self._max_records = max_records
        messages = self._take()
        if messages is None and self._failure is None:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that
            # arrives as the event is set, and the source would then never stop.
            try:
                async with asyncio.timeout(timeout):
                    await self._arrived.wait()
            except TimeoutError:
                pass
            messages = self._take()
        if self._failure is not None:
            raise self._failure
        if messages is None:
            return Fetched([], [], {})
        return self._unpack(messages)

    def _take(self) -> list[Any] | None:
        """On the loop: the oldest consumed message list, or None (and the thread wakes the loop when the
        next one arrives)."""
        with self._wake:
            if self._ready:
                self._wake.notify()  # room to read ahead again
                return self._ready.popleft()
            self._loop_waits = True
            self._arrived.clear()
            return None

    def _unpack(self, messages: list[Any]) -> Fetched:
        """Values, contexts and next positions of consumed messages; raises on a fatal consumer error.

        Columns are read with ``map`` over the unbound Message methods (C speed); partition and offset are
        read once and serve both the contexts and the positions (the last offset per partition wins, as
        consume() keeps each partition's order).
        """
        if any(map(Message.error, messages)):
            messages = self._drop_errors(messages)
        values = list(map(Message.value, messages))
        # Consumed messages always have a partition and an offset (the stubs allow None for produced ones).
        partitions: list[Any] = list(map(Message.partition, messages))
        offsets: list[Any] = list(map(Message.offset, messages))
        topic = self._single_topic
        if topic is not None:
            contexts = [
                {"topic": topic, "partition": p, "offset": o, "key": m.key(), "timestamp": m.timestamp()[1],
                 "headers": m.headers() or ()}
                for m, p, o in zip(messages, partitions, offsets, strict=True)
            ]
            positions = {(topic, p): o + 1 for p, o in dict(zip(partitions, offsets, strict=True)).items()}
        else:
            topics: list[Any] = list(map(Message.topic, messages))
            contexts = [
                {"topic": t, "partition": p, "offset": o, "key": m.key(), "timestamp": m.timestamp()[1],
                 "headers": m.headers() or ()}
                for m, t, p, o in zip(messages, topics, partitions, offsets, strict=True)
            ]
            last = dict(zip(zip(topics, partitions, strict=True), offsets, strict=True))
            positions = {tp: o + 1 for tp, o in last.items()}
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
        with self._wake:
            self._commands.append((_topic_partitions(offsets), future))
            self._wake.notify()
        await asyncio.wrap_future(future)

    def assignment(self) -> set[Partition]:
        return set(self._assignment)

    async def idle(self) -> None:
        """Nothing to do on the loop: the consumer thread polls by itself, with every assigned partition
        paused, once the loop has left its read-ahead batches waiting for ``KEEP_ALIVE`` seconds."""

    def highwaters(self) -> dict[Partition, int]:
        assigned = self._assignment
        return {p: high for p, high in self._highwaters.items() if p in assigned}

    async def close(self) -> None:
        thread, self._thread = self._thread, None
        with self._wake:
            self._stopping = True
            self._wake.notify()
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


_ANY_PARTITION = -1  # RD_KAFKA_PARTITION_UA: librdkafka's partitioner decides
_NO_HEADERS = None


class _PartitionCounts:
    """Which partitions of each topic can take records (they have a leader), from producer metadata.

    Answers ``None`` for a topic it does not know, or whose metadata is older than ``max_age`` seconds
    (the producer then looks it up again in the background). A topic that could not be looked up is not
    asked about again for ``max_age`` either.
    """

    def __init__(self, max_age: float) -> None:
        self.max_age = max_age
        self._partitions: dict[str, tuple[list[int], float]] = {}
        self._turns = PartitionTurns()

    def learn(self, metadata: Any, now: float) -> None:
        for name, topic in metadata.topics.items():
            if topic.error is not None:
                self.forget(name, now)
                continue
            available = sorted(p.id for p in topic.partitions.values() if p.leader >= 0 and p.error is None)
            self._partitions[name] = (available, now)

    def forget(self, topic: str, now: float) -> None:
        """Leave ``topic`` to librdkafka's partitioner until ``max_age`` passed (its lookup failed)."""
        self._partitions[topic] = ([], now)

    def drop(self, topic: str) -> None:
        """Look ``topic`` up again on its next use (its partitions changed)."""
        self._partitions.pop(topic, None)

    def next(self, topic: str, now: float) -> int | None:
        known = self._partitions.get(topic)
        if known is None or now - known[1] > self.max_age:
            return None
        partitions = known[0]
        if not partitions:
            return _ANY_PARTITION
        return partitions[self._turns.next(topic, len(partitions))]


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
        self._partitions = _PartitionCounts(options.metadata_max_age_ms / 1000)
        self._lookups: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        producer = Producer(self._conf, logger=librdkafka_log)
        # Fails (KafkaException) when the cluster cannot be reached with these settings.
        metadata = await asyncio.to_thread(producer.list_topics, None, self._timeout)
        self._partitions.learn(metadata, asyncio.get_running_loop().time())
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
        # Unkeyed records of one call go to one partition, the next call to the next one (what librdkafka's
        # sticky partitioner does too, but decided once per call instead of once per record). Keyed records,
        # and topics whose partitions are not known yet, are left to librdkafka's partitioner (-1).
        partition = _ANY_PARTITION
        if out.keys is None and out.topics is None:
            partition = self._sticky_partition(out.topic)
            if partition != _ANY_PARTITION:
                done = self._forget_on_unknown_partition(out.topic, done)
        state = _SendState(done, out)
        records = _batch_records(out) if out.headers is None and out.topics is None else None
        enqueued = 0
        if records is not None:
            try:
                enqueued = await self._produce_batch(producer, out.topic, records, partition, state)
            except TypeError:  # a value or key it does not take (checked before anything is enqueued)
                records = None
        if records is None:
            enqueued = await self._produce_each(producer, out, partition, state)
        if enqueued == 0:
            done(state.failures)
            return
        state.expected = enqueued
        if state.settled == enqueued:  # every report already arrived during a BufferError poll
            state.finish()
        self._wake.set()

    async def _produce_batch(self, producer: Producer, topic: str, records: list[dict[str, Any]],
                             partition: int, state: _SendState) -> int:
        """One ``produce_batch`` call (no Python loop per record); records it refused are retried one by one
        when librdkafka's queue was full, and fail otherwise. Returns how many records were enqueued."""
        enqueued: int = producer.produce_batch(topic, records, partition, state)
        if enqueued == len(records):
            return enqueued
        for index, record in enumerate(records):
            error = record.get("_error")
            if error is None:
                continue
            if error.code() != KafkaError._QUEUE_FULL:
                state.failures.append((index, KafkaException(error)))
                continue
            retry = (topic, record["value"], record.get("key"), partition, state, None, 0, None)
            if await self._produce_when_room(producer, retry, state, index):
                enqueued += 1
        return enqueued

    async def _produce_each(self, producer: Producer, out: OutBatch, partition: int, state: _SendState) -> int:
        """``produce`` per record: headers, a topic per record, or values that not all encode."""
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
            record_headers: Any = _NO_HEADERS if headers is None else list(headers[index] or ())
            try:
                # Positional (topic, value, key, partition, callback, on_delivery, timestamp, headers): keyword
                # arguments cost confluent-kafka ~300 ns more per record. `callback` it must be: confluent-kafka
                # ignores on_delivery when callback is passed, even as None.
                produce(topic, value, key, partition, state, None, 0, record_headers)
            except BufferError:  # librdkafka's queue is full: serve reports, let it drain, try again
                record = (topic, value, key, partition, state, None, 0, record_headers)
                if not await self._produce_when_room(producer, record, state, index):
                    continue
            except (KafkaException, TypeError, ValueError) as exc:
                failures.append((index, exc))
                continue
            enqueued += 1
        return enqueued

    async def _produce_when_room(self, producer: Producer, record: tuple[Any, ...], state: _SendState,
                                 index: int) -> bool:
        """Retry one record until librdkafka's queue has room; False if it was refused for good."""
        while True:
            producer.poll(0)
            await asyncio.sleep(self.POLL_INTERVAL)
            try:
                producer.produce(*record)
            except BufferError:
                continue
            except (KafkaException, TypeError, ValueError) as exc:
                state.failures.append((index, exc))
                return False
            return True

    def _sticky_partition(self, topic: str) -> int:
        """The partition for this call's unkeyed records of ``topic`` (-1: let librdkafka choose)."""
        partition = self._partitions.next(topic, asyncio.get_running_loop().time())
        if partition is None:  # unknown or stale: look it up in the background, librdkafka decides meanwhile
            if not self._lookups and self._producer is not None:
                task = asyncio.create_task(self._look_up(self._producer, topic), name="kafka-producer-metadata")
                self._lookups.add(task)
                task.add_done_callback(self._lookups.discard)
            return _ANY_PARTITION
        return partition

    def _forget_on_unknown_partition(self, topic: str, done: SendDone) -> SendDone:
        """``done``, after dropping what is known of ``topic``'s partitions if the broker no longer has the one
        chosen (the topic was recreated with fewer): the records are sent again, and the topic looked up anew."""

        def settled(failures: list[tuple[int, BaseException]]) -> None:
            for _, error in failures:
                kafka_error = _kafka_error(error)
                if kafka_error is not None and kafka_error.code() == KafkaError._UNKNOWN_PARTITION:
                    self._partitions.drop(topic)
                    break
            done(failures)

        return settled

    async def _look_up(self, producer: Producer, topic: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            metadata = await asyncio.to_thread(producer.list_topics, topic, self._timeout)
        except KafkaException as exc:
            log.debug("metadata of topic %r unavailable: %s", topic, exc)
            self._partitions.forget(topic, loop.time())
            return
        self._partitions.learn(metadata, loop.time())

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        poller, self._poller = self._poller, None
        for lookup in list(self._lookups):
            lookup.cancel()
        await asyncio.gather(*self._lookups, return_exceptions=True)
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


def _batch_records(out: OutBatch) -> list[dict[str, Any]] | None:
    """The records of ``out`` for ``produce_batch`` (which takes no headers), or ``None`` when a value does
    not encode: the per-record path then isolates the failing ones."""
    encode = out.encode
    values = out.values
    try:
        if encode is encode_auto:
            dumps = orjson.dumps
            values = [dumps(v, default=json_default) if type(v) is dict else encode_auto(v) for v in values]
        elif encode is not None:
            values = [encode(v) for v in values]
    except (TypeError, ValueError):
        return None
    if out.keys is None:
        return [{"value": v} for v in values]
    return [{"value": v, "key": k} for v, k in zip(values, out.keys, strict=True)]


def _paused_poll(
    consumer: Consumer,
    paused: list[TopicPartition],
    assignment: set[Partition],
    keep: Callable[[list[Any]], None],
) -> list[TopicPartition]:
    """In the consumer thread: pause whatever is assigned and not paused yet, then poll without waiting,
    which counts as a poll for max.poll.interval.ms. Returns the partitions now paused."""
    already = {(tp.topic, tp.partition) for tp in paused}
    fresh = [TopicPartition(t, p) for t, p in assignment if (t, p) not in already]
    if fresh:
        try:
            consumer.pause(fresh)
        except KafkaException as exc:  # revoked meanwhile: the next tick pauses the new assignment
            log.debug("pausing %s failed: %s", fresh, exc)
        else:
            paused = paused + fresh
    messages = consumer.consume(1000, 0)
    if messages:
        keep(messages)
    return paused


def _resume(consumer: Consumer, paused: list[TopicPartition], assignment: set[Partition]) -> None:
    """In the consumer thread: resume what a paused poll paused and is still assigned."""
    still = [tp for tp in paused if (tp.topic, tp.partition) in assignment]
    if not still:
        return
    try:
        consumer.resume(still)
    except KafkaException as exc:
        log.debug("resuming %s failed: %s", still, exc)


def _cached_highwaters(consumer: Consumer, partitions: set[Partition]) -> dict[Partition, int]:
    """In the consumer thread: librdkafka's cached high watermarks (updated by every fetch; no request)."""
    highwaters: dict[Partition, int] = {}
    for topic, partition in partitions:
        try:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
        except KafkaException:
            continue
        if high >= 0:
            highwaters[(topic, partition)] = high
    return highwaters


def _run_commits(
    consumer: Consumer, commands: list[tuple[list[TopicPartition], concurrent.futures.Future[None]]]
) -> None:
    """In the consumer thread: run each queued commit synchronously and settle its future."""
    for offsets, future in commands:
        if not future.set_running_or_notify_cancel():
            continue
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(None)


def _topic_partitions(offsets: Mapping[Partition, int]) -> list[TopicPartition]:
    return [TopicPartition(topic, partition, offset) for (topic, partition), offset in offsets.items()]


BACKEND = ConfluentBackend()
