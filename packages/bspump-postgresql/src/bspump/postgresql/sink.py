"""PostgreSQLSink: rows into a table by COPY or upsert, one transaction per batch, bad rows isolated."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from bspump import AsyncSink, Batch, ErrorKind, ItemFailure
from bspump.config import Choice

from . import change
from .connection import PostgreSQLConnection
from .sql import delete_statement, parse_names, qualified, split_table, upsert_statement

log = logging.getLogger("bspump.postgresql")

COPY = "copy"
UPSERT = "upsert"
DELETE = "delete"


class RowError(ValueError):
    """An event that cannot become a row (not a mapping, a key column missing, an unknown operation)."""


@dataclass(slots=True)
class Item:
    """One row operation: what the event at ``index`` of the batch turned into."""

    index: int
    action: str  # COPY, UPSERT or DELETE
    columns: tuple[str, ...]
    values: tuple[Any, ...]


class PostgreSQLSink(AsyncSink):
    """Writes events as rows of a table; acknowledges a batch once its transaction committed.

    Configuration (``[pipeline:ID:PostgreSQLSink]``):

    - ``table``: the table, optionally written ``schema.table``; ``schema`` names the schema otherwise (empty:
      the connection's search path).
    - ``columns``: the column mapping, ``column`` or ``column=field`` separated by commas (``id, name=full_name``:
      column ``name`` takes the event's ``full_name``; an absent field is NULL). Empty (the default): every key of
      each event is a column of the same name (columns an event lacks take their default).
    - ``mode``: ``insert`` writes rows with ``COPY`` (the fastest way in); ``upsert`` writes
      ``INSERT ... ON CONFLICT (keys) DO UPDATE``: rows with the same key within a batch collapse to the last one
      (so the statement never meets its own rows twice), and writing a batch again is harmless (after a
      reconnection, events are written exactly once).
    - ``keys``: the conflict key columns of ``upsert`` (and of the deletes of ``events = changes``).
    - ``events``: ``rows`` (each event is a row) or ``changes``: each event is a change of
      :class:`PostgreSQLCDCSource` (``op``, ``key``, ``row``; see :mod:`bspump.postgresql.change`): inserts,
      updates and snapshot rows are upserted from ``row``, deletes delete by ``key``, truncates are refused (they
      meet the error policy). ``changes`` needs ``mode = upsert``.

    Each batch is written in one transaction. When the database refuses it for a reason of the data (a
    constraint, a type, a value asyncpg cannot encode: a permanent error), the batch is split in halves, each
    written in its own transaction, until the bad rows are isolated: only they meet the pipeline's error policy
    (dead-lettered with the database's error), every other row is written. Transient errors (deadlock,
    serialization failure) and lost connections retry the rows not yet written, as :class:`bspump.AsyncSink`
    describes; ``concurrency`` batches may be written at the same time, each on a connection of the pool.
    """

    ConfigDefaults: ClassVar[dict[str, Any]] = {
        "table": "",
        "schema": "",
        "columns": "",
        "mode": Choice("insert", ("insert", "upsert")),
        "keys": "",
        "events": Choice("rows", ("rows", "changes")),
    }
    ConfigRequired: ClassVar[tuple[str, ...]] = ("table",)
    ConnectionType = PostgreSQLConnection

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        schema, table = split_table(str(self.Config.get("table")), str(self.Config.get("schema") or ""))
        self.schema = schema
        self.table = table
        self.table_sql = qualified(schema, table)
        self.mode = self.Config.getchoice("mode")
        self.changes = self.Config.getchoice("events") == "changes"
        self.keys = tuple(parse_names(str(self.Config.get("keys") or "")))
        self.mapping = self._parse_columns(str(self.Config.get("columns") or ""))
        if self.mode == "upsert" and not self.keys:
            raise self.Config.error("keys", "mode = upsert needs the conflict key columns (keys = id)")
        if self.changes and self.mode != "upsert":
            raise self.Config.error("events", "events = changes needs mode = upsert (and keys)")
        if self.mapping is not None:
            missing = [key for key in self.keys if key not in self.mapping]
            if missing:
                raise self.Config.error("keys", f"key columns {missing} are not in columns")
        self._statements: dict[tuple[str, tuple[str, ...]], str] = {}
        #: Transactions that failed on the data and were split to isolate bad rows.
        self.splits = 0

    def _parse_columns(self, text: str) -> dict[str, str] | None:
        if not text.strip():
            return None
        mapping: dict[str, str] = {}
        for item in parse_names(text):
            column, equals, field = item.partition("=")
            column, field = column.strip(), field.strip()
            if not column or (equals and not field):
                raise self.Config.error("columns", f"expected column or column=field, got {item!r}")
            mapping[column] = field or column
        return mapping

    # -- events to row operations ----------------------------------------------------------------------------------
    def _row(self, index: int, row: Any) -> tuple[tuple[str, ...], tuple[Any, ...]]:
        if not isinstance(row, Mapping):
            raise RowError(f"event {index} of the batch is a {type(row).__name__}, not a mapping of column values")
        mapping = self.mapping
        if mapping is None:
            return tuple(row), tuple(row.values())
        return tuple(mapping), tuple(row.get(field) for field in mapping.values())

    def _key(self, columns: tuple[str, ...], values: tuple[Any, ...]) -> tuple[Any, ...]:
        found = dict(zip(columns, values, strict=True))
        try:
            key = tuple(found[k] for k in self.keys)
        except KeyError as missing:
            raise RowError(f"the row has no key column {missing.args[0]!r} (keys = {', '.join(self.keys)})") from None
        if any(value is None for value in key):
            raise RowError(f"the row's key {dict(zip(self.keys, key, strict=True))} has a NULL part")
        return key

    def _item(self, index: int, event: Any) -> Item:
        if not self.changes:
            columns, values = self._row(index, event)
            return Item(index, UPSERT if self.mode == "upsert" else COPY, columns, values)
        if not isinstance(event, Mapping):
            raise RowError(f"event {index} of the batch is a {type(event).__name__}, not a change")
        op = event.get("op")
        if op in change.ROW_OPERATIONS:
            columns, values = self._row(index, event.get("row"))
            return Item(index, UPSERT, columns, values)
        if op == change.DELETE:
            key = event.get("key") or event.get("old")
            if not isinstance(key, Mapping):
                raise RowError(f"delete event {index} of the batch carries no key")
            columns, values = self._row(index, key)
            return Item(index, DELETE, columns, values)
        raise RowError(f"event {index} of the batch is a {op!r} change, which the sink does not apply")

    def plan(self, events: Sequence[Any]) -> tuple[list[Item], list[ItemFailure]]:
        """The row operations for ``events`` (with upsert, one per key: the last event of the key wins) and
        the events that cannot become a row. Called by :meth:`write` for each batch."""
        items: list[Item] = []
        failures: list[ItemFailure] = []
        latest: dict[tuple[Any, ...], int] = {}
        for index, event in enumerate(events):
            try:
                item = self._item(index, event)
                if item.action != COPY:
                    key = self._key(item.columns, item.values)
                    if item.action == DELETE:  # only the key columns matter, in the order of ``keys``
                        item.columns, item.values = self.keys, key
                    previous = latest.get(key)
                    latest[key] = len(items)
                    if previous is not None:
                        items[previous] = _superseded(items[previous])
            except RowError as error:
                failures.append(ItemFailure(index, error, ErrorKind.PERMANENT))
                continue
            items.append(item)
        return [item for item in items if item.action], failures

    # -- writing ---------------------------------------------------------------------------------------------------
    async def write(self, batch: Batch) -> Sequence[ItemFailure] | None:
        """Write the batch in one transaction; split it to isolate rows the database refuses. Called by the
        writer task for each batch (and for the events of a batch being tried again)."""
        items, failures = self.plan(batch.events)
        failures.extend(await self._write_items(items, whole=not failures))
        return failures or None

    async def _write_items(self, items: list[Item], whole: bool = False) -> list[ItemFailure]:
        if not items:
            return []
        try:
            await self._apply(items)
            return []
        except asyncio.CancelledError:
            raise
        except Exception as error:
            if self.classify(error) is not ErrorKind.PERMANENT:
                if whole:  # nothing of the batch was written: the base class retries it (and counts the error)
                    raise
                return [ItemFailure(item.index, error) for item in items]  # retried by the base class
            if len(items) == 1:
                return [ItemFailure(items[0].index, error, ErrorKind.PERMANENT)]
            self.splits += 1
            log.debug("%s: a transaction of %d rows failed (%s: %s); splitting it to isolate the bad rows",
                      self.qualified_id, len(items), type(error).__name__, error)
        middle = len(items) // 2
        return [*await self._write_items(items[:middle]), *await self._write_items(items[middle:])]

    async def _apply(self, items: list[Item]) -> None:
        """Every operation of ``items`` in one transaction, grouped by operation and columns."""
        groups: dict[tuple[str, tuple[str, ...]], list[tuple[Any, ...]]] = {}
        for item in items:
            groups.setdefault((item.action, item.columns), []).append(item.values)
        assert isinstance(self.connection, PostgreSQLConnection)
        async with self.connection.session() as connection, connection.transaction():
            for (action, columns), rows in groups.items():
                if action == COPY:
                    await connection.copy_records_to_table(self.table, schema_name=self.schema or None,
                                                           columns=list(columns), records=rows)
                else:
                    await connection.executemany(self._statement(action, columns), rows)

    def _statement(self, action: str, columns: tuple[str, ...]) -> str:
        statement = self._statements.get((action, columns))
        if statement is None:
            if action == UPSERT:
                statement = upsert_statement(self.table_sql, columns, self.keys)
            else:
                statement = delete_statement(self.table_sql, columns)
            self._statements[(action, columns)] = statement
        return statement


def _superseded(item: Item) -> Item:
    """An item replaced by a later event of the same key in the batch: it is written by that one."""
    return Item(item.index, "", item.columns, item.values)
