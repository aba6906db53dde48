"""Incremental positions keep their type through the JSON checkpoint; LSNs print as PostgreSQL prints them."""

from __future__ import annotations

import datetime
import decimal
import uuid

import pytest

from bspump.postgresql import format_lsn, parse_lsn
from bspump.postgresql.source import decode_value, encode_value


@pytest.mark.parametrize("value", [
    7, 2.5, "abc", None, decimal.Decimal("12.50"), datetime.date(2024, 5, 6),
    datetime.datetime(2024, 5, 6, 7, 8, 9, 500, tzinfo=datetime.UTC), uuid.UUID(int=5),
])
def test_values_round_trip(value: object) -> None:
    restored = decode_value(encode_value(value))
    assert restored == value and type(restored) is type(value)


def test_other_types_are_refused_with_a_remedy() -> None:
    with pytest.raises(TypeError, match="follow a number"):
        encode_value([1, 2])


def test_lsn_text() -> None:
    assert format_lsn(0x16B374D848) == "16/B374D848"
    assert parse_lsn("16/B374D848") == 0x16B374D848
