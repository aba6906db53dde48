"""The records the confluent producer hands to ``produce_batch``: values encoded as ``format = auto`` encodes
them, keys paired with their values, and ``None`` (the per-record path) when a value does not encode."""

from __future__ import annotations

import datetime

import orjson
import pytest

pytest.importorskip("confluent_kafka")

from bspump.kafka.backend import OutBatch
from bspump.kafka.codec import encode_auto
from bspump.kafka.confluent_producer import _batch_records

MIXED = [{"n": 1, "at": datetime.date(2026, 11, 30)}, b"raw", "text", None, [1, 2]]


def test_unkeyed_auto_records_carry_the_auto_encoding_of_each_event() -> None:
    records = _batch_records(OutBatch("t", list(MIXED), encode=encode_auto))
    assert records == [{"value": encode_auto(e)} for e in MIXED]
    assert records is not None and orjson.loads(records[0]["value"]) == {"n": 1, "at": "2026-11-30"}
    assert [r["value"] for r in records[1:]] == [b"raw", b"text", None, b"[1,2]"]


def test_keyed_records_pair_each_key_with_its_value() -> None:
    records = _batch_records(OutBatch("t", [{"a": 1}, "b"], keys=[b"k1", None], encode=encode_auto))
    assert records == [{"value": b'{"a":1}', "key": b"k1"}, {"value": b"b", "key": None}]


def test_encoded_values_pass_as_they_are() -> None:
    assert _batch_records(OutBatch("t", [b"x", b"y"])) == [{"value": b"x"}, {"value": b"y"}]


@pytest.mark.parametrize("keys", [None, [b"k", b"k"]])
def test_a_value_that_does_not_encode_leaves_the_batch_to_the_per_record_path(keys: list[bytes] | None) -> None:
    assert _batch_records(OutBatch("t", [{"ok": 1}, {"bad": object()}], keys=keys, encode=encode_auto)) is None
