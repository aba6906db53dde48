"""A decoder of the ``pgoutput`` logical replication messages (protocol version 1), as
``pg_logical_slot_peek_binary_changes`` returns them: one message per row, its first byte its kind.

The decoder keeps the relations (tables) it was told about: PostgreSQL sends a Relation message before the
first change of a table in each decoding session, so a decoder fed from the start of any peek knows every table
whose changes it meets. Column values arrive as text and become Python values by type (:func:`text_value`).
"""

from __future__ import annotations

import datetime
import decimal
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

#: Microseconds between the Unix epoch and PostgreSQL's (2000-01-01 UTC).
_PG_EPOCH: Final = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)

_INT16: Final = struct.Struct("!h")
_INT32: Final = struct.Struct("!i")
_UINT32: Final = struct.Struct("!I")
_INT64: Final = struct.Struct("!q")
_BEGIN: Final = struct.Struct("!qqI")
_COMMIT: Final = struct.Struct("!bqqq")


class DecodeError(ValueError):
    """A message that is not valid pgoutput (protocol version 1), or a change of an unknown relation."""


@dataclass(slots=True)
class Column:
    name: str
    type_oid: int
    is_key: bool


@dataclass(slots=True)
class Relation:
    """A table as the Relation message describes it."""

    oid: int
    schema: str
    name: str
    replica_identity: str  # d (default: primary key), n (nothing), f (full), i (index)
    columns: list[Column]
    converters: list[Callable[[str], Any]] = field(default_factory=list, repr=False)
    #: The primary key's columns when the reader looked them up (with ``REPLICA IDENTITY FULL`` every column
    #: is flagged as identity, which says nothing about the key); None: the identity flags decide.
    primary_key: list[str] | None = None

    def key_columns(self) -> list[str]:
        """The columns that identify a row: the primary key if known, else the replica identity's."""
        if self.primary_key is not None:
            return self.primary_key
        return [c.name for c in self.columns if c.is_key]


@dataclass(slots=True)
class Begin:
    final_lsn: int
    commit_time: datetime.datetime
    xid: int


@dataclass(slots=True)
class Commit:
    commit_lsn: int
    end_lsn: int
    commit_time: datetime.datetime


@dataclass(slots=True)
class Change:
    """An insert, update or delete of one row (a truncate lists ``tables`` instead)."""

    op: str
    relation: Relation | None
    row: dict[str, Any] | None = None
    old: dict[str, Any] | None = None
    tables: list[tuple[str, str]] | None = None

    def key(self) -> dict[str, Any] | None:
        """The replica identity columns of the row (its primary key), from the new row or the old key."""
        relation = self.relation
        if relation is None:
            return None
        source = self.row if self.row is not None else self.old
        if source is None:
            return None
        names = relation.key_columns()
        if not names:
            return None
        return {name: source.get(name) for name in names}


Message = Begin | Commit | Change | Relation | None


def _old(relation: Relation, marker: str, row: dict[str, Any]) -> dict[str, Any]:
    """The old values as sent: a key-only tuple (``K``) carries NULL for every other column, which says nothing
    about the row, so only the key columns are kept; a full old row (``O``, replica identity full) is kept whole."""
    if marker != "K":
        return row
    return {c.name: row.get(c.name) for c in relation.columns if c.is_key}


def _timestamp(microseconds: int) -> datetime.datetime:
    return _PG_EPOCH + datetime.timedelta(microseconds=microseconds)


def _bytea(text: str) -> bytes:
    return bytes.fromhex(text[2:]) if text.startswith("\\x") else text.encode()


def _bool(text: str) -> bool:
    return text == "t"


def _datetime(text: str) -> Any:
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:  # infinity, BC dates, a DateStyle other than ISO: kept as written
        return text


def _date(text: str) -> Any:
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        return text


#: Type OIDs of the built-in types whose text becomes a Python value other than ``str``.
CONVERTERS: Final[dict[int, Callable[[str], Any]]] = {
    16: _bool,  # bool
    17: _bytea,  # bytea
    20: int, 21: int, 23: int, 26: int,  # int8, int2, int4, oid
    700: float, 701: float,  # float4, float8
    1700: decimal.Decimal,  # numeric
    114: orjson.loads, 3802: orjson.loads,  # json, jsonb
    1082: _date,  # date
    1114: _datetime, 1184: _datetime,  # timestamp, timestamptz
}


def text_value(type_oid: int, text: str) -> Any:
    """A column's text as a Python value: numbers, booleans, bytes, JSON, dates and timestamps converted, other
    types (arrays, ranges, uuid, custom types) kept as PostgreSQL wrote them."""
    convert = CONVERTERS.get(type_oid)
    return text if convert is None else convert(text)


class Reader:
    """Reads the fields of one message."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 1

    def int8(self) -> int:
        value = self.data[self.pos]
        self.pos += 1
        return value

    def int16(self) -> int:
        (value,) = _INT16.unpack_from(self.data, self.pos)
        self.pos += 2
        return int(value)

    def int32(self) -> int:
        (value,) = _INT32.unpack_from(self.data, self.pos)
        self.pos += 4
        return int(value)

    def uint32(self) -> int:
        (value,) = _UINT32.unpack_from(self.data, self.pos)
        self.pos += 4
        return int(value)

    def int64(self) -> int:
        (value,) = _INT64.unpack_from(self.data, self.pos)
        self.pos += 8
        return int(value)

    def string(self) -> str:
        end = self.data.index(b"\0", self.pos)
        text = self.data[self.pos:end].decode()
        self.pos = end + 1
        return text

    def byte(self) -> str:
        return chr(self.int8())

    def tuple_data(self, relation: Relation) -> dict[str, Any]:
        count = self.int16()
        columns = relation.columns
        if count > len(columns):
            raise DecodeError(f"a row of {relation.schema}.{relation.name} has {count} columns, its relation "
                              f"message {len(columns)}")
        row: dict[str, Any] = {}
        data = self.data
        for number in range(count):
            kind = data[self.pos]
            self.pos += 1
            if kind == 0x6E:  # 'n': NULL
                row[columns[number].name] = None
            elif kind == 0x75:  # 'u': an unchanged TOASTed value that was not sent
                continue
            elif kind == 0x74:  # 't': text
                length = self.int32()
                text = data[self.pos:self.pos + length].decode()
                self.pos += length
                row[columns[number].name] = relation.converters[number](text)
            else:
                raise DecodeError(f"unknown column kind {chr(kind)!r} in a row of {relation.schema}.{relation.name}")
        return row


class PgOutputDecoder:
    """Turns pgoutput messages into :class:`Begin`, :class:`Commit`, :class:`Change` and :class:`Relation`
    objects (``None`` for messages without meaning here: origin, type, logical messages)."""

    def __init__(self) -> None:
        self.relations: dict[int, Relation] = {}

    def decode(self, data: bytes) -> Message:
        """One message, as a row of ``pg_logical_slot_peek_binary_changes`` holds it."""
        if not data:
            raise DecodeError("an empty pgoutput message")
        kind = data[0]
        try:
            if kind == 0x42:  # B
                final_lsn, timestamp, xid = _BEGIN.unpack_from(data, 1)
                return Begin(final_lsn, _timestamp(timestamp), xid)
            if kind == 0x43:  # C
                _, commit_lsn, end_lsn, timestamp = _COMMIT.unpack_from(data, 1)
                return Commit(commit_lsn, end_lsn, _timestamp(timestamp))
            if kind == 0x52:  # R
                return self._relation(Reader(data))
            if kind == 0x49:  # I
                reader = Reader(data)
                relation = self._known(reader.uint32())
                if reader.byte() != "N":
                    raise DecodeError("an insert message without its new row")
                return Change("insert", relation, row=reader.tuple_data(relation))
            if kind == 0x55:  # U
                return self._update(Reader(data))
            if kind == 0x44:  # D
                reader = Reader(data)
                relation = self._known(reader.uint32())
                marker = reader.byte()
                return Change("delete", relation, old=_old(relation, marker, reader.tuple_data(relation)))
            if kind == 0x54:  # T
                return self._truncate(Reader(data))
            if kind in (0x4F, 0x59, 0x4D):  # O (origin), Y (type), M (logical message)
                return None
        except (struct.error, IndexError, UnicodeDecodeError) as error:
            raise DecodeError(f"a truncated or malformed {chr(kind)!r} message: {error}") from None
        raise DecodeError(f"unknown pgoutput message kind {chr(kind)!r}")

    def _known(self, oid: int) -> Relation:
        relation = self.relations.get(oid)
        if relation is None:
            raise DecodeError(f"a change of relation {oid} before its relation message")
        return relation

    def _relation(self, reader: Reader) -> Relation:
        oid = reader.uint32()
        schema = reader.string()
        name = reader.string()
        identity = reader.byte()
        columns = []
        for _ in range(reader.int16()):
            flags = reader.int8()
            column = reader.string()
            type_oid = reader.uint32()
            reader.int32()  # type modifier
            columns.append(Column(column, type_oid, bool(flags & 1)))
        converters = [CONVERTERS.get(c.type_oid, str) for c in columns]
        relation = Relation(oid, schema, name, identity, columns, converters)
        self.relations[oid] = relation
        return relation

    def _update(self, reader: Reader) -> Change:
        relation = self._known(reader.uint32())
        old = None
        marker = reader.byte()
        if marker in ("K", "O"):
            old = _old(relation, marker, reader.tuple_data(relation))
            marker = reader.byte()
        if marker != "N":
            raise DecodeError("an update message without its new row")
        return Change("update", relation, row=reader.tuple_data(relation), old=old)

    def _truncate(self, reader: Reader) -> Change:
        count = reader.int32()
        reader.int8()  # options: CASCADE, RESTART IDENTITY
        tables = []
        for _ in range(count):
            relation = self._known(reader.uint32())
            tables.append((relation.schema, relation.name))
        return Change("truncate", None, tables=tables)
