"""The confluent backend's producer: records are only enqueued, and the event loop serves delivery reports.

The producer's ``produce_batch`` / ``produce`` only enqueue (they never block); the event loop serves
delivery reports with ``poll(0)`` every millisecond while deliveries are outstanding. Also here: the
partition counts from producer metadata that unkeyed records rotate over, the retries while librdkafka's
queue is full, and how a failed record is found again from its delivery report.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Producer

from bspump.codec import json_default

from .backend import OutBatch, PartitionTurns, SendDone
from .codec import encode_auto
from .confluent_errors import _kafka_error
from .options import ClientOptions, ProducerSettings, confluent_common, confluent_producer

log = logging.getLogger("bspump.kafka")
librdkafka_log = logging.getLogger("bspump.kafka.librdkafka")


class _SendState:
    """Delivery reports of one ``send`` call; librdkafka calls ``report`` from ``poll`` on the event loop.

    One callable per call rather than one closure per record: a failed record is found again by its
    encoded value and key (only when something failed, which is rare), not by an index bound per record.
    ``report`` is a plain closure: librdkafka calls it once per record, and a closure call costs about half
    of a ``__call__`` on an instance (~40 ns less per record). ``seal(n)`` says how many were enqueued.
    """

    __slots__ = ("done", "failures", "out", "refused", "report", "seal")

    def __init__(self, done: SendDone, out: OutBatch) -> None:
        self.done = done
        self.out = out
        self.failures: list[tuple[int, BaseException]] = []
        self.refused: list[tuple[bytes | None, bytes | None, KafkaError]] = []
        refused = self.refused
        finish = self.finish
        settled = 0
        expected = -1  # set by seal() once every record is enqueued

        def report(error: KafkaError | None, message: Any) -> None:
            nonlocal settled
            settled += 1
            if error is not None:
                refused.append((message.value(), message.key(), error))
            if settled == expected:
                finish()

        def seal(enqueued: int) -> None:
            nonlocal expected
            expected = enqueued
            if settled == enqueued:  # every report already arrived during a BufferError poll
                finish()

        self.report: Callable[[KafkaError | None, Any], None] = report
        self.seal: Callable[[int], None] = seal

    def finish(self) -> None:
        # The closures refer to this state (through ``finish``): dropping them breaks that cycle, so the state
        # is freed by reference counting once librdkafka lets go of its last report, not by a GC pass.
        self.report = self.seal = _settled
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


def _settled(*args: Any) -> None:
    """What a settled send's ``report`` and ``seal`` became: nothing is left to count."""


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
        state.seal(enqueued)
        self._wake.set()

    async def _produce_batch(self, producer: Producer, topic: str, records: list[dict[str, Any]],
                             partition: int, state: _SendState) -> int:
        """One ``produce_batch`` call (no Python loop per record); records it refused are retried one by one
        when librdkafka's queue was full, and fail otherwise. Returns how many records were enqueued."""
        enqueued: int = producer.produce_batch(topic, records, partition, state.report)
        if enqueued == len(records):
            return enqueued
        for index, record in enumerate(records):
            error = record.get("_error")
            if error is None:
                continue
            if error.code() != KafkaError._QUEUE_FULL:
                state.failures.append((index, KafkaException(error)))
                continue
            retry = (topic, record["value"], record.get("key"), partition, state.report, None, 0, None)
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
                produce(topic, value, key, partition, state.report, None, 0, record_headers)
            except BufferError:  # librdkafka's queue is full: serve reports, let it drain, try again
                record = (topic, value, key, partition, state.report, None, 0, record_headers)
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


def _batch_records(out: OutBatch) -> list[dict[str, Any]] | None:
    """The records of ``out`` for ``produce_batch`` (which takes no headers), or ``None`` when a value does
    not encode: the per-record path then isolates the failing ones."""
    encode = out.encode
    values = out.values
    try:
        if out.keys is None and encode is encode_auto:
            # The common case in one pass: no list of encoded values between the events and the records.
            dumps = orjson.dumps
            return [{"value": dumps(v, default=json_default) if type(v) is dict else encode_auto(v)} for v in values]
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
