"""PostgreSQLLookup: key -> row of a table, loaded whole or queried on demand with a TTL cache."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from bspump import CachedLookup
from bspump.config import Seconds

from .connection import PostgreSQLConnection
from .sql import parse_names, qualified, quote_ident, split_table


class PostgreSQLLookup(CachedLookup):
    """Rows of a table by key, for processors: ``lookup[key]`` is the row as a dict.

    Configuration (``[lookup:ID]``, besides ``mode``, ``ttl``, ``max_entries``, ``fetch_batch`` and ``refresh``
    of :class:`bspump.CachedLookup`):

    - ``connection``: the ID of the :class:`PostgreSQLConnection` to query.
    - ``table``: the table, optionally ``schema.table``; ``schema`` names the schema otherwise.
    - ``key``: the key column (its values are the lookup's keys).
    - ``columns``: the columns of each row, separated by commas (empty: all).
    - ``query``: a query to use instead of ``table``: in ``whole`` mode it returns every row; in ``on_demand``
      mode it takes the keys as ``$1`` (an array: ``SELECT * FROM users WHERE id = ANY($1)``). Its result must
      have the ``key`` column.
    - ``ready_timeout``: how long loading waits for the connection to be ready at start.

    ``whole`` loads the table at start (and every ``refresh``): for tables that fit in memory. ``on_demand``
    queries the keys a batch needs (``await lookup.prefetch(keys)`` in a processor's ``prepare``), one query
    per ``fetch_batch`` keys, and keeps rows (and the absence of missing keys) for ``ttl`` seconds.
    """

    ConfigDefaults: ClassVar[dict[str, Any]] = {
        "connection": "PostgreSQLConnection",
        "table": "",
        "schema": "",
        "key": "",
        "columns": "",
        "query": "",
        "ready_timeout": Seconds(30.0, min=0.0),
    }
    ConfigRequired: ClassVar[tuple[str, ...]] = ("key",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.key = str(self.Config.get("key"))
        self.query = str(self.Config.get("query") or "")
        table = str(self.Config.get("table") or "")
        if not (table or self.query):
            raise self.Config.error("table", "name the table (or a query) to look rows up in")
        if table and self.query:
            raise self.Config.error("query", "set either table or query, not both")
        columns = parse_names(str(self.Config.get("columns") or ""))
        if columns and self.key not in columns:
            columns.insert(0, self.key)
        selected = ", ".join(map(quote_ident, columns)) if columns else "*"
        source = qualified(*split_table(table, str(self.Config.get("schema") or ""))) if table else ""
        self.load_query = self.query or f"SELECT {selected} FROM {source}"
        self.fetch_query = self.query or f"SELECT {selected} FROM {source} WHERE {quote_ident(self.key)} = ANY($1)"
        self.connection_id = str(self.Config.get("connection"))
        self._connection: PostgreSQLConnection | None = None

    async def _pg(self) -> PostgreSQLConnection:
        if self._connection is None:
            connection = self.app.pump_service.locate_connection(self.connection_id, referrer=f"lookup:{self.id}")
            if not isinstance(connection, PostgreSQLConnection):
                raise self.Config.error("connection", f"{connection!r} is not a PostgreSQLConnection")
            self._connection = connection
        await self._connection.open()
        await self._connection.wait_ready(self.Config.getseconds("ready_timeout") or None)
        return self._connection

    def _rows(self, records: Sequence[Any]) -> dict[Any, Any]:
        key = self.key
        rows: dict[Any, Any] = {}
        for record in records:
            row = dict(record)
            if key not in row:
                raise KeyError(f"lookup {self.id!r}: the query's rows have no key column {key!r} "
                               f"(they have {', '.join(row)})")
            rows[row[key]] = row
        return rows

    async def load(self) -> Mapping[Any, Any]:
        """Every row by key (``mode = whole``); called at start and every ``refresh``."""
        connection = await self._pg()
        async with connection.session() as session:
            return self._rows(await session.fetch(self.load_query))

    async def fetch(self, keys: Sequence[Any]) -> Mapping[Any, Any]:
        """The rows of ``keys`` that exist (``mode = on_demand``), in one query."""
        connection = await self._pg()
        async with connection.session() as session:
            return self._rows(await session.fetch(self.fetch_query, list(keys)))
