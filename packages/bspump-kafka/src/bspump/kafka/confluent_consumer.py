"""The confluent backend's consumer: a consumer-group member whose blocking calls run in a thread of its own.

The consumer runs ``consume``, ``commit`` and ``close`` in a thread of its own that reads ahead a couple of
batches (librdkafka calls rebalance callbacks from inside ``consume``; they hop to the event loop with
``run_coroutine_threadsafe`` to wait for in-flight events, then commit synchronously in that thread). The
helpers at the end run in that thread too: paused polls that keep the member in its group under
backpressure, reads of the cached high watermarks (the source's lag), and the queued commits.
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

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from .backend import AssignHandler, Fetched, Partition, RevokeHandler
from .contexts import KafkaContexts
from .options import ClientOptions, ConsumerSettings, confluent_common, confluent_consumer

log = logging.getLogger("bspump.kafka")
librdkafka_log = logging.getLogger("bspump.kafka.librdkafka")


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
            return self._unpack([])
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

        Columns are read with ``map`` over the unbound Message methods (C speed) and the contexts keep them
        (:class:`KafkaContexts`: a dictionary per event only where one is read); partition and offset serve
        the positions too (the last offset per partition wins, as consume() keeps each partition's order).
        """
        if any(map(Message.error, messages)):
            messages = self._drop_errors(messages)
        values = list(map(Message.value, messages))
        # Consumed messages always have a partition and an offset (the stubs allow None for produced ones).
        partitions: list[Any] = list(map(Message.partition, messages))
        offsets: list[Any] = list(map(Message.offset, messages))
        keys = list(map(Message.key, messages))
        timestamps = list(map(Message.timestamp, messages))  # (type, ms) pairs: KafkaContexts takes the ms
        headers = list(map(Message.headers, messages))
        topic = self._single_topic
        if topic is not None:
            contexts = KafkaContexts(topic, None, partitions, offsets, keys, timestamps, headers, timestamp_pairs=True)
            positions = {(topic, p): o + 1 for p, o in dict(zip(partitions, offsets, strict=True)).items()}
        else:
            topics: list[Any] = list(map(Message.topic, messages))
            contexts = KafkaContexts(None, topics, partitions, offsets, keys, timestamps, headers,
                                     timestamp_pairs=True)
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
