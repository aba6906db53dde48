"""bspump-postgresql passes the core's conformance kit against the real server: the connection and sink, the
query source (incremental mode), the CDC source, and the declarations of the LISTEN source."""

from __future__ import annotations

import asyncio
import os
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

import bspump.postgresql
from bspump.testing import ConnectorConformance

pytestmark = [pytest.mark.postgresql]

DSN = os.environ.get("BSPUMP_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def connection_settings(dsn: str) -> dict[str, Any]:
    """The connection's keys for ``dsn``: separate keys rather than the URL, whose user name the core would
    take for a secret and mask in every log line."""
    url = urllib.parse.urlsplit(dsn)
    settings = {"host": url.hostname or "127.0.0.1", "port": url.port or 5432, "user": url.username or "postgres",
                "database": url.path.lstrip("/") or "postgres"}
    if url.password:
        settings["password"] = urllib.parse.unquote(url.password)
    return settings


async def execute(*statements: str) -> None:
    connection = await asyncpg.connect(DSN)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


async def fetch(query: str, *args: Any) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(DSN)
    try:
        return list(await connection.fetch(query, *args))
    finally:
        await connection.close()


class PostgreSQLConformance(ConnectorConformance):
    """A schema of its own per test; slots and publications made by a test are dropped after it."""

    connection_class = bspump.postgresql.PostgreSQLConnection
    schema: str
    slots: list[str]

    @pytest.fixture(autouse=True)
    def _schema(self, postgres_dsn: str) -> Iterator[None]:
        self.schema = f"kit_{uuid.uuid4().hex[:10]}"
        self.slots = []
        asyncio.run(execute(f'CREATE SCHEMA "{self.schema}"'))
        yield
        drops = [f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{s}'"
                 for s in self.slots]
        drops += [f"DROP PUBLICATION IF EXISTS {s}" for s in self.slots]
        asyncio.run(execute(*drops, f'DROP SCHEMA "{self.schema}" CASCADE'))

    def connection_config(self) -> dict[str, Any]:
        return connection_settings(DSN)

    def number(self, record: Any) -> int:
        if isinstance(record, dict) and "op" in record:  # a change of the CDC source
            record = record["row"]
        return super().number(record)

    async def _table(self) -> str:
        name = f'"{self.schema}".t_{uuid.uuid4().hex[:8]}'
        await execute(f"CREATE TABLE {name} (n int PRIMARY KEY, text text NOT NULL)")
        return name

    async def _insert_each(self, table: str, events: list[Any]) -> None:
        """One transaction per event, as an application writes them (``executemany`` would be one transaction:
        the CDC source acknowledges whole transactions, so the kit's positions need one event per transaction)."""
        connection = await asyncpg.connect(DSN)
        try:
            for event in events:
                await connection.execute(f"INSERT INTO {table} (n, text) VALUES ($1, $2)", event["n"], event["text"])
        finally:
            await connection.close()


class TestPostgreSQLSinkConformance(PostgreSQLConformance):
    sink_class = bspump.postgresql.PostgreSQLSink

    async def create_target(self) -> str:
        return await self._table()

    def sink_config(self, target: str) -> dict[str, Any]:
        return {"table": target.replace('"', "")}

    async def read_target(self, target: str) -> list[Any]:
        return [dict(r) for r in await fetch(f"SELECT n, text FROM {target}")]

    def bad_event(self) -> Any:
        return {"n": -1, "text": None}  # NOT NULL violated


class TestPostgreSQLSourceConformance(PostgreSQLConformance):
    source_class = bspump.postgresql.PostgreSQLSource

    async def create_origin(self) -> str:
        return await self._table()

    def source_config(self, origin: str) -> dict[str, Any]:
        return {"query": f"SELECT n, text FROM {origin} WHERE n > $1 ORDER BY n", "incremental_column": "n",
                "start_value": "-1", "interval": "100ms", "batch_size": self.batch_size, "commit_interval": "100ms",
                "checkpoint_table": f"{self.schema}.checkpoints"}

    async def feed_origin(self, origin: str, events: list[Any]) -> None:
        await self._insert_each(origin, events)


class TestPostgreSQLCDCConformance(PostgreSQLConformance):
    source_class = bspump.postgresql.PostgreSQLCDCSource

    async def create_origin(self) -> tuple[str, str]:
        """A table, its publication and a slot (created before the feed, as a deployment creates them)."""
        table = await self._table()
        name = f"kit_{uuid.uuid4().hex[:12]}"
        self.slots.append(name)
        await execute(f"CREATE PUBLICATION {name} FOR TABLE {table}",
                      f"SELECT pg_create_logical_replication_slot('{name}', 'pgoutput')")
        return table, name

    def source_config(self, origin: tuple[str, str]) -> dict[str, Any]:
        _, name = origin
        return {"slot": name, "publication": name, "create_slot": False, "create_publication": False,
                "batch_size": self.batch_size, "commit_interval": "100ms", "poll_interval": "50ms"}

    async def feed_origin(self, origin: tuple[str, str], events: list[Any]) -> None:
        await self._insert_each(origin[0], events)


class TestPostgreSQLNotifyConformance(PostgreSQLConformance):
    """The kit's declaration checks; its source tests feed the origin before the source starts, which a LISTEN
    source by definition never sees (PostgreSQL drops notifications nobody listens to): test_postgresql.py
    tests it with notifications sent while it listens."""

    source_class = bspump.postgresql.PostgreSQLNotifySource
    connection_class = None

    def _not_for_listen(self) -> None:
        pytest.skip("LISTEN cannot read notifications sent before it listened (see the class docstring)")

    def test_source_reads_what_was_fed(self, tmp_path: Any) -> None:
        self._not_for_listen()

    def test_source_resumes_after_a_graceful_stop_without_duplicates(self, tmp_path: Any) -> None:
        self._not_for_listen()

    def test_source_never_commits_past_an_unacknowledged_event(self, tmp_path: Any) -> None:
        self._not_for_listen()
