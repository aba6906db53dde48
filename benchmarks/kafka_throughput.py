"""Kafka topic -> 1 processor -> topic, with offsets committed only after the broker confirmed the output.

Compares bspump (KafkaSource -> Processor -> KafkaSink) with the fastest hand-written consume/transform/produce
loop with the same semantics that we could write for each client library, against the same broker in the
same run:

- aiokafka baseline: ``getmany`` batches, the producer's batch API (one BatchBuilder per fetch, closed before
  ``send_batch`` so that it does not linger), batches kept in flight while the next fetch runs, offsets committed every second up to the last batch whose
  delivery futures all completed. All through aiokafka's public API, as a user would write it. bspump goes one
  step further on the producer side: it adds records straight to the batch's record builder, past the
  per-record Python wrapper of ``BatchBuilder.append`` (about 150 ns a record; ``bspump.kafka.aiokafka_records``).
  The "aiokafka direct-append loop" does the same by hand; it is reported (``direct_append_ratio``, bspump
  against it) but is not one of the baselines ``ratio`` is taken against.
- confluent baseline: a plain blocking thread (no asyncio at all), ``consume(num_messages)``, one
  ``produce_batch`` per consumed batch (to one partition, the next batch to the next one; measured a few per
  cent faster than ``produce`` per record even with positional arguments, which ``--confluent-produce-per-record``
  selects), a per-batch delivery counter, ``poll(0)`` after each batch, offsets committed every second up to
  the last fully delivered batch; ``fetch.queue.backoff.ms=10`` (without it librdkafka pauses prefetching
  for a second at a time and the loop runs 4.5x slower) and ``reconnect.backoff.ms=20`` (as bspump sets it).

The transform is the same everywhere: JSON decode, add a field, JSON encode (orjson). Messages are unkeyed
(~100 bytes); input and output topics have 3 partitions, and each contestant runs again with an output topic
of one partition (" 1p": what a broker auto-creates; ``--single-partition-messages`` events per run). Producers use acks=all, linger 5 ms, 256 KiB batches.
Every contestant runs ``--rounds`` (5) times, interleaved, and the best run of each counts. Each run is a fresh
Python process, as a deployment is (``--in-process`` runs them all in this one: bspump's runs then got slower
from round to round while the baselines' did not), with the same GC thresholds (``--default-gc`` keeps
CPython's, which slows every side by 10-25 %). Times and CPU are measured inside the run, after the imports.

    python benchmarks/kafka_throughput.py [--messages 500000] [--confluent-messages 500000] [--rounds 5]
    # one to two minutes in all on the project's 2-core machine (60 s for the run of issue 15)

The broker is found through BSPUMP_TEST_KAFKA (default 127.0.0.1:9092). The last line printed is JSON:
``{"bspump_eps", "baseline_eps", "ratio", "confluent_eps", "confluent_baseline_eps", "confluent_ratio",
"single_partition_eps": {backend: bspump's events/s to one output partition}, "single_partition_baseline_eps"
(the hand-written loops, same backend), "single_partition_of_three" (bspump, one partition against three),
"single_partition_ratio" (bspump against the loop, one partition), "direct_append_ratio" (bspump (aiokafka)
against the direct-append loop), "cpu_us_per_event": {contestant: least
CPU microseconds per event}, "cpu_ratio" and "confluent_cpu_ratio" (the loop's least CPU per event over
bspump's: steadier than the events/s ratios, which move by +-0.05 from run to run on a 2-core machine shared
with the broker), ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import logging
import os
import resource
import subprocess
import sys
import time
import uuid
from collections import deque
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

import bspump
import bspump.kafka
from bspump.kafka.aiokafka_records import finish_batch, record_appender

PARTITIONS = 3
LINGER_MS = 5
BATCH_BYTES = 262144
FETCH_RECORDS = int(os.environ.get("BSPUMP_BENCH_FETCH_RECORDS", "1000"))
COMMIT_INTERVAL = 1.0
NO_HEADERS: list[tuple[str, bytes]] = []
GC_THRESHOLDS = (100_000, 50, 50)


def transform(value: bytes) -> bytes:
    event = orjson.loads(value)
    event["seen"] = True
    return orjson.dumps(event)


# -- topics -------------------------------------------------------------------------------------------------


async def create_topics(bootstrap: str, topics: dict[str, int]) -> None:
    """Create each topic with its number of partitions and wait for their leaders."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    names = list(topics)
    try:
        await admin.create_topics([NewTopic(n, num_partitions=p, replication_factor=1) for n, p in topics.items()])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            described = await admin.describe_topics(names)
            if all(len(d.get("partitions", [])) == topics[d["topic"]]
                   and all(p.get("leader", -1) >= 0 for p in d["partitions"]) for d in described):
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"topics {names} have no leaders")
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(names)
    except Exception as exc:
        print(f"# deleting topics failed: {exc}", file=sys.stderr)
    finally:
        await admin.close()


def fill(bootstrap: str, topic: str, count: int) -> None:
    """Write ``count`` JSON messages (~100 bytes) spread over the partitions."""
    payload = "x" * 60
    try:
        from confluent_kafka import Producer
    except ImportError:
        asyncio.run(_fill_aiokafka(bootstrap, topic, count, payload))
        return
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1048576,
                         "queue.buffering.max.messages": 1000000})
    for i in range(count):
        while True:
            try:
                producer.produce(topic, orjson.dumps({"n": i, "payload": payload}), partition=i % PARTITIONS)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120) != 0:
        raise RuntimeError("filling the input topic failed")


async def _fill_aiokafka(bootstrap: str, topic: str, count: int, payload: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    try:
        futures = [await producer.send(topic, orjson.dumps({"n": i, "payload": payload}), partition=i % PARTITIONS)
                   for i in range(count)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def committed_total(bootstrap: str, group: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return sum([await consumer.committed(TopicPartition(topic, p)) or 0 for p in range(PARTITIONS)])
    finally:
        await consumer.stop()


# -- bspump -------------------------------------------------------------------------------------------------


class MarkSeen(bspump.Processor):
    def process(self, context: bspump.Context, event: Any) -> Any:
        event["seen"] = True
        return event


async def run_bspump(bootstrap: str, client: str, source: str, target: str, group: str, count: int) -> float:
    app = bspump.BSPumpApplication(load_plugins=False, environ={})
    svc = app.get_service("bspump.PumpService")
    svc.add_connection(bspump.kafka.KafkaConnection(app, "KafkaConnection", config={
        "bootstrap_servers": bootstrap, "client": client}))
    pipeline = bspump.Pipeline(app, "Benchmark")
    sink = bspump.kafka.KafkaSink(app, pipeline, connection="KafkaConnection", config={
        "topic": target, "linger_ms": LINGER_MS, "max_batch_size": BATCH_BYTES, "acks": "all"})
    pipeline.build(
        bspump.kafka.KafkaSource(app, pipeline, connection="KafkaConnection", config={
            "topics": source, "group_id": group, "format": "json", "batch_size": FETCH_RECORDS,
            "commit_interval": COMMIT_INTERVAL}),
        MarkSeen(app, pipeline),
        sink,
    )
    svc.add_pipeline(pipeline)
    start = time.perf_counter()
    task = asyncio.create_task(app.run_async())
    first = None
    while sink.sent < count and not task.done():
        if first is None and sink.sent:
            first = time.perf_counter() - start
        await asyncio.sleep(0.005)
    if os.environ.get("BSPUMP_BENCH_DEBUG"):
        print(f"# bspump[{client}] first sent after {first} s, all after {time.perf_counter() - start:.3f} s",
              file=sys.stderr)
    app.stop()  # graceful: drain, flush, commit, leave the group
    await task
    elapsed = time.perf_counter() - start
    if sink.sent < count:
        raise RuntimeError(f"bspump[{client}] wrote {sink.sent} of {count}")
    return elapsed


# -- aiokafka baseline --------------------------------------------------------------------------------------


InFlight = deque[tuple[list[asyncio.Future[Any]], dict[TopicPartition, int]]]


async def aiokafka_clients(bootstrap: str, source: str, group: str) -> tuple[AIOKafkaConsumer, AIOKafkaProducer]:
    """The started consumer and producer of an aiokafka baseline."""
    consumer = AIOKafkaConsumer(source, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=LINGER_MS,
                                max_batch_size=BATCH_BYTES)
    await consumer.start()
    await producer.start()
    return consumer, producer


async def send_closed(producer: AIOKafkaProducer, builder: Any, topic: str, partition: int) -> asyncio.Future[Any]:
    """``send_batch`` of a complete batch, closed first: aiokafka lets an open batch linger for ``linger_ms``
    and queues a partition's next batch only once the previous one was taken, so on one partition every
    batch waited out the linger in turn (156k events/s here, against 350k+ closed)."""
    builder.close()
    future: asyncio.Future[Any] = await producer.send_batch(builder, topic, partition=partition)
    return future


def collect_completed(in_flight: InFlight, committable: dict[TopicPartition, int]) -> None:
    """Move the offsets of the oldest fully delivered fetches to ``committable``, in fetch order."""
    while in_flight and all(f.done() for f in in_flight[0][0]):
        futures, offsets = in_flight.popleft()
        for f in futures:
            f.result()  # raise on a failed delivery: the offsets must not be committed
        committable.update(offsets)


async def commit_the_rest(consumer: AIOKafkaConsumer, in_flight: InFlight,
                          committable: dict[TopicPartition, int]) -> None:
    """At the end: wait for every delivery, then commit what is left."""
    for futures, offsets in in_flight:
        await asyncio.gather(*futures)
        committable.update(offsets)
    in_flight.clear()
    if committable:
        await consumer.commit(dict(committable))


async def run_aiokafka_baseline(bootstrap: str, source: str, target: str, group: str, count: int,
                                out_partitions: int = PARTITIONS, direct: bool = False) -> float:
    """``direct``: records go straight to the batch's record builder, as bspump adds them (see
    ``bspump.kafka.aiokafka_records``), instead of through aiokafka's public ``BatchBuilder.append``."""
    start = time.perf_counter()
    consumer, producer = await aiokafka_clients(bootstrap, source, group)
    loop = asyncio.get_running_loop()
    in_flight: InFlight = deque()
    committable: dict[TopicPartition, int] = {}
    next_commit = loop.time() + COMMIT_INTERVAL
    done = 0
    sticky = 0
    try:
        while done < count:
            data = await consumer.getmany(timeout_ms=500, max_records=FETCH_RECORDS)
            futures = []
            offsets = {}
            # Unkeyed: the whole fetch goes to one partition, rotating (fewer, fuller batches).
            partition = sticky = (sticky + 1) % out_partitions
            builder = producer.create_batch()
            if direct:
                append = record_appender(builder)
                added = 0
                for tp, records in data.items():
                    for r in records:
                        value = transform(r.value)
                        if append(added, None, None, value, NO_HEADERS) is None:
                            finish_batch(builder, added)
                            futures.append(await send_closed(producer, builder, target, partition))
                            builder = producer.create_batch()
                            append = record_appender(builder)
                            added = 0
                            append(added, None, None, value, NO_HEADERS)
                        added += 1
                    offsets[tp] = records[-1].offset + 1
                    done += len(records)
                finish_batch(builder, added)
            else:
                for tp, records in data.items():
                    for r in records:
                        value = transform(r.value)
                        if builder.append(key=None, value=value, timestamp=None) is None:
                            futures.append(await send_closed(producer, builder, target, partition))
                            builder = producer.create_batch()
                            builder.append(key=None, value=value, timestamp=None)
                    offsets[tp] = records[-1].offset + 1
                    done += len(records)
            if offsets:
                futures.append(await send_closed(producer, builder, target, partition))
            if futures:
                in_flight.append((futures, offsets))
            collect_completed(in_flight, committable)
            if loop.time() >= next_commit and committable:
                await consumer.commit(dict(committable))
                committable.clear()
                next_commit = loop.time() + COMMIT_INTERVAL
        await commit_the_rest(consumer, in_flight, committable)
    finally:
        await producer.stop()
        await consumer.stop()
    return time.perf_counter() - start


async def run_aiokafka_baseline_decoupled(bootstrap: str, source: str, target: str, group: str,
                                         count: int, out_partitions: int = PARTITIONS) -> float:
    """Like :func:`run_aiokafka_baseline`, but fetching/transforming and sending run as two tasks joined by
    a bounded queue, so the next fetch does not wait while ``send_batch`` waits for the accumulator."""
    start = time.perf_counter()
    consumer, producer = await aiokafka_clients(bootstrap, source, group)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[list[tuple[int, Any]], dict[TopicPartition, int]] | None] = asyncio.Queue(8)
    in_flight: InFlight = deque()
    committable: dict[TopicPartition, int] = {}

    async def fetch() -> None:
        done = 0
        sticky = 0
        while done < count:
            data = await consumer.getmany(timeout_ms=500, max_records=FETCH_RECORDS)
            builders = []
            offsets = {}
            partition = sticky = (sticky + 1) % out_partitions
            builder = producer.create_batch()
            for tp, records in data.items():
                for r in records:
                    value = transform(r.value)
                    if builder.append(key=None, value=value, timestamp=None) is None:
                        builders.append((partition, builder))
                        builder = producer.create_batch()
                        builder.append(key=None, value=value, timestamp=None)
                offsets[tp] = records[-1].offset + 1
                done += len(records)
            if offsets:
                builders.append((partition, builder))
            if builders:
                await queue.put((builders, offsets))
        await queue.put(None)

    async def send() -> None:
        next_commit = loop.time() + COMMIT_INTERVAL
        while (item := await queue.get()) is not None:
            builders, offsets = item
            futures = [await send_closed(producer, b, target, p) for p, b in builders]
            in_flight.append((futures, offsets))
            collect_completed(in_flight, committable)
            if loop.time() >= next_commit and committable:
                await consumer.commit(dict(committable))
                committable.clear()
                next_commit = loop.time() + COMMIT_INTERVAL
        await commit_the_rest(consumer, in_flight, committable)

    try:
        await asyncio.gather(fetch(), send())
    finally:
        await producer.stop()
        await consumer.stop()
    return time.perf_counter() - start


# -- confluent baseline -------------------------------------------------------------------------------------


class _BatchDone:
    __slots__ = ("error", "remaining")

    def __init__(self, remaining: int) -> None:
        self.remaining = remaining
        self.error: Any = None

    def __call__(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.error = err
        self.remaining -= 1


def run_confluent_baseline(bootstrap: str, source: str, target: str, group: str, count: int,
                           batch_api: bool = False, out_partitions: int = PARTITIONS) -> float:
    """A plain blocking loop: consume a batch, transform, produce, serve delivery reports, commit.

    ``batch_api=False``: ``produce`` per record with positional arguments (keywords cost ~300 ns more per
    call), each record to the partition it came from. ``batch_api=True``: one ``produce_batch`` per consumed
    batch, all of it to one partition, the next batch to the next partition.
    """
    from confluent_kafka import Consumer, Producer
    from confluent_kafka import TopicPartition as CTopicPartition

    start = time.perf_counter()
    # fetch.queue.backoff.ms: librdkafka otherwise pauses prefetching for a second each time its queue is
    # above queued.min.messages, which made this loop 4.5x slower here.
    # reconnect.backoff.ms: librdkafka's default (100 ms) delays the first metadata answer of every new
    # client by ~50 ms; bspump's connection sets 20 ms, so the baseline does too.
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "fetch.queue.backoff.ms": 10,
                         "reconnect.backoff.ms": 20})
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": LINGER_MS,
                         "batch.size": BATCH_BYTES, "reconnect.backoff.ms": 20})
    consumer.subscribe([source])
    in_flight: deque[tuple[_BatchDone, dict[int, int]]] = deque()
    committable: dict[int, int] = {}
    next_commit = time.monotonic() + COMMIT_INTERVAL
    done = 0
    sticky = 0

    def collect_completed() -> None:
        while in_flight and in_flight[0][0].remaining == 0:
            state, offsets = in_flight.popleft()
            if state.error is not None:
                raise RuntimeError(f"delivery failed: {state.error}")
            committable.update(offsets)

    def commit() -> None:
        consumer.commit(offsets=[CTopicPartition(source, p, o) for p, o in committable.items()],
                        asynchronous=True)
        committable.clear()

    try:
        while done < count:
            messages = consumer.consume(num_messages=FETCH_RECORDS, timeout=0.5)
            if not messages:
                producer.poll(0)
                collect_completed()
                continue
            state = _BatchDone(0)
            offsets: dict[int, int] = {}
            n = 0
            if batch_api:
                records = []
                for m in messages:
                    if m.error() is None:
                        records.append({"value": transform(m.value())})
                        offsets[m.partition()] = m.offset() + 1
                sticky = (sticky + 1) % out_partitions
                while True:
                    try:
                        n = producer.produce_batch(target, records, sticky, state)
                        break
                    except BufferError:
                        producer.poll(0.01)
                if n != len(records):
                    raise RuntimeError(f"produce_batch enqueued {n} of {len(records)}")
            else:
                produce = producer.produce
                for m in messages:
                    if m.error() is not None:
                        continue
                    partition = m.partition() % out_partitions
                    while True:
                        try:
                            produce(target, transform(m.value()), None, partition, state)
                            break
                        except BufferError:
                            producer.poll(0.01)
                    offsets[partition] = m.offset() + 1
                    n += 1
            state.remaining += n
            done += n
            in_flight.append((state, offsets))
            producer.poll(0)
            collect_completed()
            if time.monotonic() >= next_commit and committable:
                commit()
                next_commit = time.monotonic() + COMMIT_INTERVAL
        producer.flush(60)
        collect_completed()
        if in_flight:
            raise RuntimeError("deliveries missing after flush")
        if committable:
            consumer.commit(offsets=[CTopicPartition(source, p, o) for p, o in committable.items()],
                            asynchronous=False)
    finally:
        consumer.close()
    return time.perf_counter() - start


# -- main ---------------------------------------------------------------------------------------------------


def measure(run: Any, count: int) -> tuple[float, float]:
    """Seconds for one run, and CPU microseconds per event of this whole process (every thread, librdkafka's
    included; the broker's not): less noisy than wall-clock time on a machine shared with the broker."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    elapsed: float = run()
    after = resource.getrusage(resource.RUSAGE_SELF)
    return elapsed, (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) / count * 1e6


def run_isolated(label: str, args: argparse.Namespace, source: str, output: str, group: str,
                 count: int) -> tuple[float, float]:
    """One run of ``label`` in a fresh Python process (as a deployment runs): no heap or GC state left
    by the other contestants' runs."""
    command = [sys.executable, __file__, "--one", label, "--source", source, "--output", output,
               "--group", group, "--count", str(count)]
    if args.default_gc:
        command.append("--default-gc")
    if args.confluent_produce_per_record:
        command.append("--confluent-produce-per-record")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{label} failed:\n{done.stdout}{done.stderr}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return float(figures["elapsed"]), float(figures["cpu"])


async def check_committed(bootstrap: str, group: str, topic: str, count: int, output: str,
                          out_partitions: int) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(output, p) for p in range(out_partitions)]
        written = sum((await consumer.end_offsets(tps)).values())
    finally:
        await consumer.stop()
    if written < count:
        raise RuntimeError(f"{output} holds {written} messages, expected at least {count}")
    total = await committed_total(bootstrap, group, topic)
    if total < count:
        raise RuntimeError(f"group {group} committed {total} offsets, expected at least {count}")


#: Contestants whose output topic has a single partition (what a broker auto-creates) carry this suffix.
SINGLE = " 1p"


def out_partitions(label: str) -> int:
    return 1 if label.endswith(SINGLE) else PARTITIONS


def contestants(args: argparse.Namespace, bootstrap: str, source: str) -> dict[str, tuple[int, Any]]:
    """Label -> (events, run(output, group) -> seconds). Labels ending in " 1p" write to a topic of one
    partition."""
    n, m, s1 = args.messages, args.confluent_messages, args.single_partition_messages
    found: dict[str, tuple[int, Any]] = {}
    for suffix, size, size_c in [("", n, m), *([] if args.skip_single_partition else [(SINGLE, s1, s1)])]:
        parts = 1 if suffix else PARTITIONS

        def add(label: str, count: int, run: Any, suffix: str = suffix) -> None:
            found[label + suffix] = (count, run)

        add("aiokafka baseline seq", size, lambda out, group, size=size, parts=parts: asyncio.run(
            run_aiokafka_baseline(bootstrap, source, out, group, size, parts)))
        add("aiokafka baseline 2task", size, lambda out, group, size=size, parts=parts: asyncio.run(
            run_aiokafka_baseline_decoupled(bootstrap, source, out, group, size, parts)))
        if not suffix:  # for reference only: not one of the baselines the ratios are taken against
            add("aiokafka direct-append loop", size, lambda out, group, size=size: asyncio.run(
                run_aiokafka_baseline(bootstrap, source, out, group, size, direct=True)))
        add("bspump (aiokafka)", size, lambda out, group, size=size: asyncio.run(
            run_bspump(bootstrap, "aiokafka", source, out, group, size)))
        if not args.skip_confluent:
            add("confluent baseline", size_c, lambda out, group, size=size_c, parts=parts: run_confluent_baseline(
                bootstrap, source, out, group, size, batch_api=not args.confluent_produce_per_record,
                out_partitions=parts))
            add("bspump (confluent)", size_c, lambda out, group, size=size_c: asyncio.run(
                run_bspump(bootstrap, "confluent", source, out, group, size)))
    return found


def run_one(args: argparse.Namespace, bootstrap: str) -> None:
    """``--one LABEL``: a single run in this process; prints ``{"elapsed", "cpu"}``."""
    args.messages = args.confluent_messages = args.single_partition_messages = args.count
    _, run = contestants(args, bootstrap, args.source)[args.one]
    elapsed, cpu = measure(functools.partial(run, args.output, args.group), args.count)
    print(json.dumps({"elapsed": elapsed, "cpu": cpu}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=500000, help="events per aiokafka run")
    parser.add_argument("--confluent-messages", type=int, default=500000, help="events per confluent run")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the best of each side counts")
    parser.add_argument("--single-partition-messages", type=int, default=250000,
                        help="events per run writing to an output topic of one partition")
    parser.add_argument("--skip-confluent", action="store_true")
    parser.add_argument("--skip-single-partition", action="store_true")
    parser.add_argument("--only", help="run only the contestants whose label contains this (no JSON summary)")
    parser.add_argument("--confluent-produce-per-record", action="store_true",
                        help="confluent baseline with produce() per record instead of produce_batch() "
                             "(measured a few per cent slower)")
    parser.add_argument("--default-gc", action="store_true",
                        help="keep CPython's default GC thresholds instead of the tuned ones (for both sides)")
    parser.add_argument("--in-process", action="store_true",
                        help="run every contestant in this one process instead of a fresh process per run")
    for hidden in ("--one", "--source", "--output", "--group"):  # a single isolated run (internal)
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not args.default_gc:
        # Every run uses the same GC thresholds. The default (700 allocations per young collection) costs any
        # consume/transform/produce loop 10-25 %; a deployment would tune it too.
        gc.set_threshold(*GC_THRESHOLDS)
    bootstrap = os.environ.get("BSPUMP_TEST_KAFKA", "127.0.0.1:9092")
    if args.one:
        run_one(args, bootstrap)
        return
    run_id = uuid.uuid4().hex[:8]
    source = f"bench-in-{run_id}"
    count = max(args.messages, 0 if args.skip_confluent else args.confluent_messages,
                0 if args.skip_single_partition else args.single_partition_messages)
    n, m = args.messages, args.confluent_messages
    runs = contestants(args, bootstrap, source)
    if args.only:
        runs = {label: run for label, run in runs.items() if args.only in label}
    outputs = {label: f"bench-out-{run_id}-{i}" for i, label in enumerate(runs)}
    asyncio.run(create_topics(bootstrap, {source: PARTITIONS,
                                          **{outputs[label]: out_partitions(label) for label in runs}}))
    best: dict[str, float] = {}
    least_cpu: dict[str, float] = {}
    try:
        t = time.perf_counter()
        fill(bootstrap, source, count)
        print(f"# filled {source} with {count} messages in {time.perf_counter() - t:.1f} s", flush=True)
        for round_no in range(args.rounds):
            # Interleaved, so that a slower phase of the machine does not favour one side.
            for label, (size, run) in runs.items():
                group = f"bench-{run_id}-{round_no}-{label.replace(' ', '-').replace('(', '').replace(')', '')}"
                if args.in_process:
                    elapsed, cpu = measure(functools.partial(run, outputs[label], group), size)
                else:
                    elapsed, cpu = run_isolated(label, args, source, outputs[label], group, size)
                eps = size / elapsed
                print(f"{label + f' #{round_no + 1}':<28} {size:>8} events in {elapsed:6.2f} s = {eps:>10,.0f} "
                      f"events/s, {cpu:5.2f} us CPU per event", flush=True)
                least_cpu[label] = min(least_cpu.get(label, float("inf")), cpu)
                if label.startswith("bspump"):
                    asyncio.run(check_committed(bootstrap, group, source, size, outputs[label],
                                                out_partitions(label)))
                best[label] = max(best.get(label, 0.0), eps)
        if args.only:
            return
        baseline_eps = max(best["aiokafka baseline seq"], best["aiokafka baseline 2task"])
        result: dict[str, Any] = {
            "bspump_eps": round(best["bspump (aiokafka)"]),
            "baseline_eps": round(baseline_eps),
            "ratio": round(best["bspump (aiokafka)"] / baseline_eps, 3),
        }
        # bspump adds records straight to aiokafka's record builder (bspump.kafka.aiokafka_records), which the
        # public-API loops above do not: this is bspump against a loop that does the same.
        result["direct_append_ratio"] = round(best["bspump (aiokafka)"] / best["aiokafka direct-append loop"], 3)
        if not args.skip_confluent:
            result["confluent_eps"] = round(best["bspump (confluent)"])
            result["confluent_baseline_eps"] = round(best["confluent baseline"])
            result["confluent_ratio"] = round(best["bspump (confluent)"] / best["confluent baseline"], 3)
        if not args.skip_single_partition:
            backends = ["aiokafka", *([] if args.skip_confluent else ["confluent"])]
            single = {b: best[f"bspump ({b}){SINGLE}"] for b in backends}
            three = {b: best[f"bspump ({b})"] for b in backends}
            single_baseline = {"aiokafka": max(best["aiokafka baseline seq" + SINGLE],
                                               best["aiokafka baseline 2task" + SINGLE])}
            if not args.skip_confluent:
                single_baseline["confluent"] = best["confluent baseline" + SINGLE]
            result["single_partition_eps"] = {b: round(eps) for b, eps in single.items()}
            result["single_partition_baseline_eps"] = {b: round(eps) for b, eps in single_baseline.items()}
            # bspump on one output partition against bspump on three, and against its client's hand-written loop
            result["single_partition_of_three"] = {b: round(single[b] / three[b], 3) for b in backends}
            result["single_partition_ratio"] = {b: round(single[b] / single_baseline[b], 3) for b in backends}
        result["cpu_us_per_event"] = {label: round(cpu, 2) for label, cpu in least_cpu.items()}
        # CPU per event, the hand-written loop's against bspump's (least of the rounds): steadier than events/s on
        # a machine whose cores the broker shares (the same code's events/s ratio moves by +-0.05 there).
        result["cpu_ratio"] = round(min(least_cpu["aiokafka baseline seq"], least_cpu["aiokafka baseline 2task"])
                                    / least_cpu["bspump (aiokafka)"], 3)
        if not args.skip_confluent:
            result["confluent_cpu_ratio"] = round(least_cpu["confluent baseline"] / least_cpu["bspump (confluent)"], 3)
        result.update(messages=n, confluent_messages=None if args.skip_confluent else m, rounds=args.rounds,
                      gc_thresholds=list(gc.get_threshold()), isolated=not args.in_process)
    finally:
        asyncio.run(delete_topics(bootstrap, [source, *outputs.values()]))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
