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
class Rows:
    """Rows written by one statement (a COPY, or an upsert or delete per row): the events at ``indexes`` of the
    batch, as ``values`` for ``columns``."""

    action: str  # COPY, UPSERT or DELETE
    columns: tuple[str, ...]
    indexes: Sequence[int]
    values: list[tuple[Any, ...]]


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
    describes.

    ``concurrency`` batches are written at the same time, each in its own transaction on a connection of the
    pool (acknowledged in order all the same). Unless set, it is 2 with ``insert`` (COPY batches are independent:
    the server copies one while the next is prepared) and 1 with ``upsert``, where batches must commit in order:
    with more, a later batch may commit before an earlier one that holds an older version of the same key.
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
        if self.Config.origin("concurrency") == "default" and self.mode == "insert":
            # COPY batches are independent: with two in flight the server copies one while the next is prepared.
            self.concurrency = 2
        self._statements: dict[tuple[str, tuple[str, ...]], str] = {}
        self._plans: dict[int, tuple[list[Rows], list[ItemFailure]]] = {}  # by id() of the batches put
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

    def plan(self, events: Sequence[Any]) -> tuple[list[Rows], list[ItemFailure]]:
        """The row operations for ``events``, grouped by operation and columns (with upsert, one row per key:
        the last event of the key wins), and the events that cannot become a row. Called by :meth:`write` for
        each batch."""
        if self.mode != "upsert" and self.mapping is None:
            return self._plan_copy(events)
        items: list[Item | None] = []
        item: Item | None
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
                        items[previous] = None  # superseded: the later event of the key writes the row
            except RowError as error:
                failures.append(ItemFailure(index, error, ErrorKind.PERMANENT))
                continue
            except TypeError as error:  # a key value that cannot be compared (a list, a dict)
                failures.append(ItemFailure(index, RowError(f"event {index} of the batch has a key that is not a "
                                                            f"plain value: {error}"), ErrorKind.PERMANENT))
                continue
            items.append(item)
        groups: dict[tuple[str, tuple[str, ...]], tuple[list[int], list[tuple[Any, ...]]]] = {}
        for item in items:
            if item is not None:
                indexes, values = groups.setdefault((item.action, item.columns), ([], []))
                indexes.append(item.index)
                values.append(item.values)
        return [Rows(action, columns, indexes, values) for (action, columns), (indexes, values) in groups.items()], \
            failures

    def _plan_copy(self, events: Sequence[Any]) -> tuple[list[Rows], list[ItemFailure]]:
        """:meth:`plan` of the common case, COPY of each event's keys. Events of a batch usually are dicts with
        the same keys: they become one group in two tight passes."""
        if all(type(event) is dict for event in events):
            shapes = {tuple(event) for event in events}
            if len(shapes) == 1:
                return [Rows(COPY, shapes.pop(), range(len(events)), [tuple(e.values()) for e in events])], []
        groups: dict[tuple[str, ...], tuple[list[int], list[tuple[Any, ...]]]] = {}
        failures: list[ItemFailure] = []
        for index, event in enumerate(events):
            if type(event) is not dict and not isinstance(event, Mapping):
                failures.append(ItemFailure(index, RowError(
                    f"event {index} of the batch is a {type(event).__name__}, not a mapping of column values"),
                    ErrorKind.PERMANENT))
                continue
            indexes, values = groups.setdefault(tuple(event), ([], []))
            indexes.append(index)
            values.append(tuple(event.values()))
        return [Rows(COPY, columns, indexes, values) for columns, (indexes, values) in groups.items()], failures

    # -- writing ---------------------------------------------------------------------------------------------------
    def put(self, batch: Batch) -> None:
        """Plan the batch's rows as it arrives, then queue it: planning runs while the writer waits for the
        server on the batch before (a CPU cost that would otherwise add to every write)."""
        self._plans[id(batch)] = self.plan(batch.events)
        super().put(batch)

    async def close(self) -> None:
        self._plans.clear()
        await super().close()

    async def write(self, batch: Batch) -> Sequence[ItemFailure] | None:
        """Write the batch in one transaction; split it to isolate rows the database refuses. Called by the
        writer task for each batch (and for the events of a batch being tried again)."""
        planned = self._plans.pop(id(batch), None)
        groups, failures = planned if planned is not None else self.plan(batch.events)
        failures = list(failures)
        failures.extend(await self._write_rows(groups, whole=not failures))
        return failures or None

    async def _write_rows(self, groups: list[Rows], whole: bool = False) -> list[ItemFailure]:
        count = sum(len(rows.indexes) for rows in groups)
        if not count:
            return []
        try:
            await self._apply(groups)
            return []
        except asyncio.CancelledError:
            raise
        except Exception as error:
            if self.classify(error) is not ErrorKind.PERMANENT:
                if whole:  # nothing of the batch was written: the base class retries it (and counts the error)
                    raise
                return [ItemFailure(i, error) for rows in groups for i in rows.indexes]  # retried by the base
            if count == 1:
                return [ItemFailure(next(i for rows in groups for i in rows.indexes), error, ErrorKind.PERMANENT)]
            self.splits += 1
            log.debug("%s: a transaction of %d rows failed (%s: %s); splitting it to isolate the bad rows",
                      self.qualified_id, count, type(error).__name__, error)
        first, second = _halves(groups, count // 2)
        return [*await self._write_rows(first), *await self._write_rows(second)]

    async def _apply(self, groups: list[Rows]) -> None:
        """Every group of rows in one transaction."""
        assert isinstance(self.connection, PostgreSQLConnection)
        async with self.connection.session() as connection, connection.transaction():
            for rows in groups:
                if rows.action == COPY:
                    await connection.copy_records_to_table(self.table, schema_name=self.schema or None,
                                                           columns=list(rows.columns), records=rows.values)
                else:
                    await connection.executemany(self._statement(rows.action, rows.columns), rows.values)

    def _statement(self, action: str, columns: tuple[str, ...]) -> str:
        statement = self._statements.get((action, columns))
        if statement is None:
            if action == UPSERT:
                statement = upsert_statement(self.table_sql, columns, self.keys)
            else:
                statement = delete_statement(self.table_sql, columns)
            self._statements[(action, columns)] = statement
        return statement


def _halves(groups: list[Rows], size: int) -> tuple[list[Rows], list[Rows]]:
    """The first ``size`` rows of ``groups`` and the rest, each still grouped."""
    first: list[Rows] = []
    second: list[Rows] = []
    for rows in groups:
        take = min(max(size, 0), len(rows.indexes))
        size -= take
        if take:
            first.append(Rows(rows.action, rows.columns, rows.indexes[:take], rows.values[:take]))
        if take < len(rows.indexes):
            second.append(Rows(rows.action, rows.columns, rows.indexes[take:], rows.values[take:]))
    return first, second
