"""The contexts of a fetched batch: built from columns only where read, and then what both backends built
eagerly before (topic, partition, offset, key, timestamp in ms, headers); the sink reads key and headers
as columns without building them."""

from __future__ import annotations

from typing import Any

import pytest

from bspump.kafka.contexts import KafkaContexts
from bspump.kafka.sink import _HEADERS, _KEY, _column
from bspump.lazy_contexts import select_contexts

HEADERS = [("h", b"1")]


def batch(topics: list[str] | None = None) -> KafkaContexts:
    return KafkaContexts(None if topics else "orders", topics, [0, 1, 0], [10, 20, 11], [None, b"k\xc3\xa9", b"k2"],
                         [1000, 2000, 3000], [None, HEADERS, None])


EXPECTED = [
    {"topic": "orders", "partition": 0, "offset": 10, "key": None, "timestamp": 1000, "headers": ()},
    {"topic": "orders", "partition": 1, "offset": 20, "key": b"k\xc3\xa9", "timestamp": 2000, "headers": HEADERS},
    {"topic": "orders", "partition": 0, "offset": 11, "key": b"k2", "timestamp": 3000, "headers": ()},
]


def test_each_context_holds_where_its_event_came_from() -> None:
    assert [batch()[i] for i in range(3)] == EXPECTED  # one at a time
    assert batch().materialize() == EXPECTED  # all at once (the fast construction)
    assert list(batch(["orders", "orders", "orders"])) == EXPECTED  # a topic per record


def test_the_sink_reads_key_and_headers_without_building_contexts() -> None:
    contexts = batch()
    assert _column(contexts, _KEY, "key") == [None, b"k\xc3\xa9", b"k2"]
    assert _column(contexts, _HEADERS, "headers") == [(), HEADERS, ()]
    assert contexts.column("offset") == [10, 20, 11] and contexts.column("topic") == ["orders"] * 3
    assert contexts.column("error") == [None, None, None]
    assert repr(contexts).endswith("0 read>")
    contexts[1]["key"] = b"changed"  # once read (and perhaps changed), columns come from the contexts
    assert _column(contexts, _KEY, "key") == [None, b"changed", b"k2"]


def test_text_keys_are_decoded_wherever_they_are_read() -> None:
    contexts = batch()
    contexts.text_keys = True
    assert contexts.column("key") == [None, "ké", "k2"]
    assert [c["key"] for c in contexts] == [None, "ké", "k2"]


def test_a_selection_keeps_rows_and_what_was_read() -> None:
    contexts = batch(["a", "b", "c"])
    contexts[2]["mark"] = 1
    kept = select_contexts(contexts, [1, 2])
    assert isinstance(kept, KafkaContexts)
    assert kept.column("topic") == ["b", "c"]
    assert kept[0] == {**EXPECTED[1], "topic": "b"} and kept[1]["mark"] == 1
    fresh = select_contexts(batch(), [0, 2])
    assert isinstance(fresh, KafkaContexts)
    assert fresh.column("offset") == [10, 11] and fresh.column("headers") == [(), ()]
    assert fresh.materialize() == [EXPECTED[0], EXPECTED[2]]


def test_the_confluent_consumer_unpacks_messages_into_columns() -> None:
    confluent_kafka = pytest.importorskip("confluent_kafka")
    from bspump.kafka.confluent_consumer import ConfluentConsumer

    try:
        messages = [confluent_kafka.Message(topic="orders", partition=p, offset=o, key=k, value=b"v%d" % o,
                                            headers=h, timestamp=(1, t))
                    for p, o, k, t, h in [(0, 10, None, 1000, None), (1, 20, b"k\xc3\xa9", 2000, HEADERS),
                                          (0, 11, b"k2", 3000, None)]]
    except TypeError:  # the lowest confluent-kafka bspump-kafka allows (2.6) makes Messages only in consume()
        pytest.skip(f"confluent-kafka {confluent_kafka.version()[0]} cannot create a Message in Python")
    consumer: Any = ConfluentConsumer.__new__(ConfluentConsumer)
    for single in ("orders", None):
        consumer._single_topic = single
        fetched = consumer._unpack(messages)
        assert fetched.values == [b"v10", b"v20", b"v11"]
        assert isinstance(fetched.contexts, KafkaContexts)
        assert fetched.contexts.column("timestamp") == [1000, 2000, 3000]  # from librdkafka's (type, ms) pairs
        assert list(fetched.contexts) == EXPECTED
        assert fetched.positions == {("orders", 0): 12, ("orders", 1): 21}


def test_the_aiokafka_consumer_unpacks_records_into_columns() -> None:
    pytest.importorskip("aiokafka")
    from aiokafka.structs import ConsumerRecord, TopicPartition

    from bspump.kafka.aiokafka_backend import _fetched

    def record(topic: str, p: int, o: int, k: bytes | None, t: int, h: Any) -> Any:
        return ConsumerRecord(topic, p, o, t, 0, k, b"v%d" % o, None, -1, -1, h)

    data = {
        TopicPartition("orders", 0): [record("orders", 0, 10, None, 1000, ()),
                                      record("orders", 0, 11, b"k2", 3000, ())],
        TopicPartition("orders", 1): [record("orders", 1, 20, b"k\xc3\xa9", 2000, HEADERS)],
    }
    fetched = _fetched(data)
    assert fetched.values == [b"v10", b"v11", b"v20"]
    assert list(fetched.contexts) == [EXPECTED[0], EXPECTED[2], EXPECTED[1]]
    assert fetched.positions == {("orders", 0): 12, ("orders", 1): 21}
    compacted = _fetched({TopicPartition("orders", 0): [record("orders", 0, o, None, 1, ()) for o in (3, 7, 8)]})
    assert [c["offset"] for c in compacted.contexts] == [3, 7, 8] and compacted.positions == {("orders", 0): 9}
    two = _fetched({**data, TopicPartition("audit", 0): [record("audit", 0, 5, None, 500, ())]})
    assert isinstance(two.contexts, KafkaContexts)
    assert two.contexts.column("topic") == ["orders", "orders", "orders", "audit"]
    assert [c["topic"] for c in two.contexts] == ["orders", "orders", "orders", "audit"]
