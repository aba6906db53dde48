"""PostgreSQLSource: a query's rows streamed through a server-side cursor, optionally following a column."""

from __future__ import annotations

import asyncio
import datetime
import decimal
import functools
import logging
import uuid
from typing import Any, ClassVar, Final

import orjson

from bspump import PositionedSource
from bspump import context as keys
from bspump.config import Int, Seconds

from .checkpoint import DEFAULT_TABLE, PostgreSQLCheckpointStore
from .connection import PostgreSQLConnection

log = logging.getLogger("bspump.postgresql")

#: The one partition of the incremental mode: the followed column's last acknowledged value.
VALUE: Final = "value"


class PostgreSQLSource(PositionedSource[str]):
    """Rows of a query, each a dict of column values, streamed in batches through a server-side cursor (the
    result is never held whole in memory; the query runs in one read-only, repeatable-read transaction, which
    holds a connection of the pool while it is read).

    Configuration (``[pipeline:ID:PostgreSQLSource]``):

    - ``query``: the SQL; parameters are ``$1``, ``$2``...
    - ``params``: the parameters, a JSON array (``[10, "active"]``).
    - ``batch_size``: rows fetched and emitted per batch.
    - ``incremental_column``: follow this column (it must increase along the query's ``ORDER BY``): the query's
      ``$1`` is the last acknowledged value (``start_value`` before the first acknowledgement) and ``params``
      become ``$2``... (``SELECT * FROM orders WHERE id > $1 ORDER BY id``). The value is committed, once every
      row up to it was acknowledged, to ``checkpoint_table`` of the same database (key
      ``PipelineID.ComponentID``); a restart resumes after it. With a column that is not unique, write ``>=``:
      rows sharing the last value are then read again (duplicates, never gaps).
    - ``start_value``: the first run's ``$1`` in incremental mode, as JSON (``0``, ``"2024-01-01"``).
    - ``interval``: run the query again every this many seconds; 0 (the default) runs it once and ends.
    - ``checkpoint_table``: the table holding the incremental mode's positions (created when missing).
    """

    ConfigDefaults: ClassVar[dict[str, Any]] = {
        "query": "",
        "params": "",
        "batch_size": Int(1000, min=1, max=1_000_000),
        "incremental_column": "",
        "start_value": "",
        "interval": Seconds(0.0, min=0.0),
        "checkpoint_table": DEFAULT_TABLE,
    }
    ConfigRequired: ClassVar[tuple[str, ...]] = ("query",)
    ConnectionType = PostgreSQLConnection

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.query = str(self.Config.get("query"))
        self.params = self._json_setting("params", [])
        if not isinstance(self.params, list):
            raise self.Config.error("params", "expected a JSON array of the query's parameters")
        self.batch_size = self.Config.getint("batch_size")
        self.column = str(self.Config.get("incremental_column") or "")
        self.start_value = self._json_setting("start_value", None)
        if self.column and self.start_value is None:
            raise self.Config.error("start_value", "incremental_column needs the first value of $1 (start_value = 0)")
        self.interval = self.Config.getseconds("interval")
        self._store: PostgreSQLCheckpointStore | None = None
        #: Rows emitted, and query runs completed.
        self.rows = 0
        self.runs = 0

    def _json_setting(self, key: str, default: Any) -> Any:
        text = self.Config.get(key)
        if text is None or text == "":
            return default
        if not isinstance(text, str):
            return text
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError as error:
            raise self.Config.error(key, f"expected JSON ({error})") from None

    def preflight(self) -> None:
        """In incremental mode the source commits on a second pooled connection while its cursor holds one."""
        pool_max = self.pg.Config.getint("pool_max")
        if self.column and pool_max < 2:
            raise self.pg.Config.error("pool_max", f"{self.qualified_id} reads on one connection of the pool while "
                                                   f"it commits on another: pool_max must be at least 2, not "
                                                   f"{pool_max}")

    @property
    def pg(self) -> PostgreSQLConnection:
        connection = self.connection
        assert isinstance(connection, PostgreSQLConnection)
        return connection

    def checkpoint_store(self) -> PostgreSQLCheckpointStore:
        """Positions go to ``checkpoint_table`` in the connection's database."""
        if self._store is None:
            self._store = PostgreSQLCheckpointStore(self.pg, str(self.Config.get("checkpoint_table")))
        return self._store

    async def main(self) -> None:
        """Run the query (again every ``interval`` seconds), emitting a batch per cursor fetch."""
        last = self.start_value
        if self.column:
            stored = await self.start_client(self.load_positions, "reading the checkpoint")
            if VALUE in stored:
                last = decode_value(stored[VALUE])
        while True:
            await self.pipeline.wait_ready()
            last = await self.start_client(functools.partial(self._run, last), "the query")
            self.runs += 1
            if self.interval <= 0:
                return
            await asyncio.sleep(self.interval)

    async def _run(self, last: Any) -> Any:
        """One run of the query from ``last`` (incremental mode); returns the last value emitted."""
        arguments = [last, *self.params] if self.column else list(self.params)
        context = {keys.SOURCE: self.qualified_id}
        column = self.column
        async with self.pg.session() as session, session.transaction(isolation="repeatable_read", readonly=True):
            cursor = await session.cursor(self.query, *arguments)
            while True:
                rows = await cursor.fetch(self.batch_size)
                if not rows:
                    return last
                events = [dict(row) for row in rows]
                if column:
                    if column not in events[-1]:
                        raise KeyError(f"incremental_column {column!r} is not a column of the query's result "
                                       f"(it has {', '.join(events[-1])})")
                    last = events[-1][column]
                    delivery = self.track({VALUE: encode_value(last)})
                else:
                    delivery = self.track({})
                del rows
                await self.emit(events, context, delivery=delivery)
                self.rows += len(events)
                await self.maybe_commit()


def encode_value(value: Any) -> Any:
    """A followed column's value as JSON for the checkpoint: numbers and strings as they are, other types
    tagged so that :func:`decode_value` restores the type the query's ``$1`` expects."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime.datetime):
        return {"datetime": value.isoformat()}
    if isinstance(value, datetime.date):
        return {"date": value.isoformat()}
    if isinstance(value, decimal.Decimal):
        return {"decimal": str(value)}
    if isinstance(value, uuid.UUID):
        return {"uuid": str(value)}
    raise TypeError(f"cannot keep a {type(value).__name__} as the incremental position; follow a number, text, "
                    "date, timestamp, numeric or uuid column")


def decode_value(value: Any) -> Any:
    """The inverse of :func:`encode_value`."""
    if isinstance(value, dict) and len(value) == 1:
        ((tag, text),) = value.items()
        if tag == "datetime":
            return datetime.datetime.fromisoformat(text)
        if tag == "date":
            return datetime.date.fromisoformat(text)
        if tag == "decimal":
            return decimal.Decimal(text)
        if tag == "uuid":
            return uuid.UUID(text)
    return value
