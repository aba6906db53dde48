"""Smoke: a real Kafka broker with aiokafka and confluent-kafka."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

# Types only: "conftest" is no unique module name to import at run time.
if TYPE_CHECKING:
    from conftest import TopicFactory

pytestmark = [pytest.mark.smoke, pytest.mark.kafka]


async def test_aiokafka_multi_partition_group_commit(
    kafka_bootstrap: str, kafka_topic_factory: TopicFactory
) -> None:
    topic = await kafka_topic_factory(partitions=3)
    group = f"{topic}-group"

    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, acks="all", compression_type="zstd"
    )
    await producer.start()
    try:
        for i in range(30):
            await producer.send_and_wait(
                topic, value=f"v{i}".encode(), key=f"k{i}".encode(), partition=i % 3,
                headers=[("n", str(i).encode())],
            )  # fmt: skip
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        received: dict[int, list[bytes]] = {}
        deadline = time.monotonic() + 30
        while sum(map(len, received.values())) < 30 and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for tp, records in batches.items():
                received.setdefault(tp.partition, []).extend(
                    r.value or b"" for r in records
                )
        assert sorted(received) == [0, 1, 2]
        assert sum(map(len, received.values())) == 30
        assert received[1][:2] == [b"v1", b"v4"]  # order is kept within a partition
        await consumer.commit()
        committed = [
            await consumer.committed(TopicPartition(topic, p)) for p in range(3)
        ]
        assert committed == [10, 10, 10]
    finally:
        await consumer.stop()

    # A new member of the same group resumes after the committed offsets: nothing left.
    resumed = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
    )
    await resumed.start()
    try:
        batches = await resumed.getmany(timeout_ms=2000)
        assert sum(len(v) for v in batches.values()) == 0
        assert [await resumed.position(TopicPartition(topic, p)) for p in range(3)] == [
            10,
            10,
            10,
        ]
    finally:
        await resumed.stop()


async def test_confluent_kafka_round_trip(
    kafka_bootstrap: str, kafka_topic_factory: TopicFactory
) -> None:
    from confluent_kafka import Consumer, KafkaError, Producer

    topic = await kafka_topic_factory(partitions=2)

    def produce_and_consume() -> list[bytes]:
        producer = Producer(
            {
                "bootstrap.servers": kafka_bootstrap,
                "linger.ms": 5,
                "compression.type": "lz4",
            }
        )
        for i in range(20):
            producer.produce(topic, value=f"m{i}".encode(), key=str(i).encode())
        assert producer.flush(30) == 0

        consumer = Consumer(
            {
                "bootstrap.servers": kafka_bootstrap,
                "group.id": f"{topic}-group",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        out: list[bytes] = []
        try:
            consumer.subscribe([topic])
            deadline = time.monotonic() + 30
            while len(out) < 20 and time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                err = msg.error()
                if err is not None:
                    assert err.code() == KafkaError._PARTITION_EOF, err
                    continue
                out.append(msg.value() or b"")
            consumer.commit(asynchronous=False)
        finally:
            consumer.close()
        return out

    values = await asyncio.to_thread(produce_and_consume)
    assert sorted(values) == sorted(f"m{i}".encode() for i in range(20))
