"""The pgoutput decoder against messages recorded from a real PostgreSQL 15 (see recorded_pgoutput.py)."""

from __future__ import annotations

import datetime
import decimal

import pytest
from recorded_pgoutput import MESSAGES

from bspump.postgresql.pgoutput import Begin, Change, Commit, DecodeError, PgOutputDecoder, Relation


def decoded() -> list[object]:
    decoder = PgOutputDecoder()
    return [decoder.decode(bytes.fromhex(data)) for _, data in MESSAGES]


def changes() -> list[Change]:
    return [m for m in decoded() if isinstance(m, Change)]


def test_transactions_are_framed_by_begin_and_commit_with_increasing_lsns() -> None:
    messages = decoded()
    kinds = " ".join(m.op if isinstance(m, Change) else type(m).__name__ for m in messages)
    assert kinds == ("Begin Relation insert insert Commit Begin update Commit Begin delete Commit "
                     "Begin Relation insert Commit Begin update Commit Begin delete Commit "
                     "Begin Relation truncate Commit")
    begins = [m for m in messages if isinstance(m, Begin)]
    commits = [m for m in messages if isinstance(m, Commit)]
    assert len(begins) == len(commits) == 7
    for begin, commit in zip(begins, commits, strict=True):
        assert begin.final_lsn == commit.commit_lsn < commit.end_lsn
        assert begin.commit_time == commit.commit_time
        assert begin.commit_time.tzinfo is not None
    assert [c.end_lsn for c in commits] == sorted(c.end_lsn for c in commits)
    assert len({b.xid for b in begins}) == 7


def test_a_relation_message_describes_the_table_and_its_key() -> None:
    relation = next(m for m in decoded() if isinstance(m, Relation))
    assert (relation.schema, relation.name, relation.replica_identity) == ("public", "rec_t", "d")
    assert [c.name for c in relation.columns] == ["id", "j", "ts", "n", "b", "t", "ok", "f", "d", "big"]
    assert [c.name for c in relation.columns if c.is_key] == ["id"]


def test_column_text_becomes_python_values_by_type() -> None:
    insert = changes()[0]
    assert insert.op == "insert" and insert.old is None and insert.row is not None
    row = insert.row
    assert row["id"] == 1
    assert row["j"] == {"a": [1, 2]}
    assert row["ts"] == datetime.datetime(2024, 5, 6, 7, 8, 9, 500000, tzinfo=datetime.UTC)
    assert row["n"] == decimal.Decimal("12.50")
    assert row["b"] == b"\xde\xad"
    assert (row["t"], row["ok"], row["f"], row["d"]) == ("hello", True, 1.5, datetime.date(2024, 5, 6))
    assert row["big"] == "x" * 10000
    assert insert.key() == {"id": 1}


def test_nulls_updates_and_deletes_with_the_default_replica_identity() -> None:
    _, second, update, delete, *_ = changes()
    assert second.row == {"id": 2, "j": None, "ts": None, "n": None, "b": None, "t": None, "ok": None, "f": None,
                          "d": None, "big": None}
    assert update.op == "update" and update.row is not None and update.row["t"] == "changed"
    assert update.old is None  # the key did not change: PostgreSQL sends no old key
    assert delete.op == "delete" and delete.row is None
    assert delete.old == {"id": 2}  # a key-only tuple: the other columns' NULLs mean nothing and are left out
    assert delete.key() == {"id": 2}


def test_replica_identity_full_gives_the_old_row() -> None:
    insert, update, delete = changes()[4:7]
    assert insert.relation is not None and insert.relation.replica_identity == "f"
    assert update.old == {"id": 1, "t": "a"} and update.row == {"id": 1, "t": "b"}
    assert delete.old == {"id": 1, "t": "b"}
    assert delete.key() == {"id": 1, "t": "b"}  # every column is flagged as identity
    assert delete.relation is not None
    delete.relation.primary_key = ["id"]  # what the CDC source looks up in the catalog for such tables
    assert delete.key() == {"id": 1}


def test_truncate_lists_its_tables() -> None:
    truncate = changes()[-1]
    assert truncate.op == "truncate" and truncate.tables == [("public", "rec_t")]


def test_an_unchanged_toasted_value_is_left_out_of_the_row() -> None:
    decoder = PgOutputDecoder()
    decoder.decode(bytes.fromhex(MESSAGES[12][1]))  # the relation message of rec_full (id, t)
    oid = next(iter(decoder.relations))
    message = b"U" + oid.to_bytes(4, "big") + b"N" + (2).to_bytes(2, "big") + b"t" + (1).to_bytes(4, "big") + b"7u"
    change = decoder.decode(message)
    assert isinstance(change, Change) and change.row == {"id": 7}


def test_malformed_messages_raise_a_decode_error() -> None:
    decoder = PgOutputDecoder()
    with pytest.raises(DecodeError, match="before its relation message"):
        decoder.decode(bytes.fromhex(MESSAGES[2][1]))
    with pytest.raises(DecodeError, match="truncated or malformed"):
        decoder.decode(bytes.fromhex(MESSAGES[0][1])[:10])
    with pytest.raises(DecodeError, match="unknown pgoutput message kind"):
        decoder.decode(b"Z")
