"""bspump-kafka passes the core's conformance kit against the real broker, on both client backends."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any, ClassVar

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

import bspump.kafka
from bspump.testing import ConnectorConformance

pytestmark = [pytest.mark.kafka]

PARTITIONS = 2


class KafkaConformance(ConnectorConformance):
    connection_class = bspump.kafka.KafkaConnection
    source_class = bspump.kafka.KafkaSource
    sink_class = bspump.kafka.KafkaSink
    client: ClassVar[str] = "aiokafka"
    bootstrap: str
    created: list[str]

    @pytest.fixture(autouse=True)
    def _broker(self, kafka_bootstrap: str) -> Iterator[None]:
        self.bootstrap = kafka_bootstrap
        self.created = []
        yield
        if self.created:
            asyncio.run(self._delete(self.created))

    # -- the kit's hooks ---------------------------------------------------------------------------------------
    def connection_config(self) -> dict[str, Any]:
        return {"bootstrap_servers": self.bootstrap, "client": self.client}

    async def create_target(self) -> str:
        return await self._topic()

    def sink_config(self, target: str) -> dict[str, Any]:
        return {"topic": target}

    async def read_target(self, target: str) -> list[Any]:
        return await self._read(target)

    def bad_event(self) -> Any:
        return {"n": -1, "blob": "x" * 2_000_000}  # larger than max_request_size: the broker's client refuses it

    async def create_origin(self) -> str:
        return await self._topic()

    def source_config(self, origin: str) -> dict[str, Any]:
        return {"topics": origin, "group_id": f"{origin}-group", "format": "json", "batch_size": self.batch_size,
                "commit_interval": "100ms"}

    async def feed_origin(self, origin: str, events: list[Any]) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await producer.start()
        try:
            for event in events:
                await producer.send(origin, orjson.dumps(event))
            await producer.flush()
        finally:
            await producer.stop()

    # -- the broker ------------------------------------------------------------------------------------------
    async def _topic(self) -> str:
        name = f"conformance-{self.client}-{uuid.uuid4().hex[:10]}"
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)])
            self.created.append(name)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                described = await admin.describe_topics([name])
                parts = described[0].get("partitions", []) if described else []
                if len(parts) == PARTITIONS and all(p.get("leader", -1) >= 0 for p in parts):
                    return name
                await asyncio.sleep(0.1)
            raise TimeoutError(f"topic {name} has no leaders")
        finally:
            await admin.close()

    async def _read(self, topic: str) -> list[bytes]:
        """Every record of ``topic``, up to its end offsets as they are now."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            values: list[bytes] = []
            while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    values.extend(r.value for r in records)
            return values
        finally:
            await consumer.stop()

    async def _delete(self, topics: list[str]) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            await admin.delete_topics(topics)
        finally:
            await admin.close()


class TestKafkaConformanceAiokafka(KafkaConformance):
    client = "aiokafka"


class TestKafkaConformanceConfluent(KafkaConformance):
    client = "confluent"
