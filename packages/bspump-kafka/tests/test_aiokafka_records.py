"""Records added straight to aiokafka's record builder make the same batch as through its public append, and
another aiokafka (a builder this module does not know) falls back to the public append."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.producer.message_accumulator import BatchBuilder

from bspump.kafka.aiokafka_records import appends_directly, finish_batch, record_appender

RECORDS: list[tuple[int, bytes | None, bytes | None, list[tuple[str, bytes]]]] = [
    (1_700_000_000_000 + i, None if i % 3 else f"k{i}".encode(), b'{"n": %d}' % i,
     [("h", str(i).encode())] if i % 4 == 0 else [])
    for i in range(500)
]


class OtherBuilder(BatchBuilder):  # type: ignore[misc]
    """Stands for a BatchBuilder this module does not know."""


def new_batch(size: int, compression: int = 0, builder: type[Any] = BatchBuilder) -> Any:
    """An empty batch of message format 2 (aiokafka 0.12 takes the format first; 0.13 made it always 2)."""
    if "magic" in inspect.signature(BatchBuilder).parameters:
        return builder(2, size, compression, is_transactional=False)
    return builder(size, compression)


def fill(builder: Any) -> int:
    append = record_appender(builder)
    added = 0
    for timestamp, key, value, headers in RECORDS:
        if append(added, timestamp, key, value, headers) is None:
            break
        added += 1
    finish_batch(builder, added)
    return added


@pytest.mark.parametrize("compression", [0, 1])  # none, gzip (the batch is compressed as it is built)
def test_direct_appends_build_the_same_batch_as_the_public_append(compression: int) -> None:
    public = new_batch(1 << 20, compression)
    for timestamp, key, value, headers in RECORDS:
        assert public.append(timestamp=timestamp, key=key, value=value, headers=headers) is not None
    public.close()

    direct = new_batch(1 << 20, compression)
    assert appends_directly(direct)
    assert fill(direct) == len(RECORDS)
    assert direct.record_count() == len(RECORDS)
    assert direct._build() == public._build()


def test_a_full_batch_takes_no_more_records_either_way() -> None:
    direct, public = new_batch(2048), new_batch(2048, builder=OtherBuilder)
    assert appends_directly(direct) and not appends_directly(public)
    added = fill(direct)
    assert 0 < added < len(RECORDS)
    assert fill(public) == added and public.record_count() == added
    assert direct._build() == public._build()


def test_an_unknown_builder_is_filled_through_its_public_append() -> None:
    calls: list[dict[str, Any]] = []

    class Recording(OtherBuilder):
        def append(self, **kwargs: Any) -> Any:
            calls.append(kwargs)
            return super().append(**kwargs)

    builder = new_batch(1 << 20, builder=Recording)
    assert fill(builder) == len(RECORDS)
    assert len(calls) == len(RECORDS) and calls[1] == {"timestamp": RECORDS[1][0], "key": None,
                                                       "value": RECORDS[1][2], "headers": []}
    reference = new_batch(1 << 20)
    fill(reference)
    assert builder._build() == reference._build()


async def test_the_installed_aiokafkas_producer_batches_take_the_direct_path() -> None:
    """Fails when an aiokafka upgrade changes the internals: the producer would then fall back (slower)."""
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", compression_type="gzip")  # never started
    try:
        batch = producer.create_batch()
        if "magic" in inspect.signature(BatchBuilder).parameters:
            pytest.skip("aiokafka 0.12 picks the message format from the broker's version, once started")
        assert appends_directly(batch)
    finally:
        await producer.stop()
