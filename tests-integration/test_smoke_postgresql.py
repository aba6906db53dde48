"""Smoke: PostgreSQL with asyncpg."""

from __future__ import annotations

import asyncpg
import pytest

pytestmark = [pytest.mark.smoke, pytest.mark.postgresql]


async def test_asyncpg_round_trip(postgres_dsn: str, pg_schema: str) -> None:
    conn = await asyncpg.connect(
        postgres_dsn, server_settings={"search_path": pg_schema}
    )
    try:
        await conn.execute(
            "CREATE TABLE events (id int PRIMARY KEY, name text NOT NULL, doc jsonb)"
        )
        await conn.executemany(
            "INSERT INTO events (id, name, doc) VALUES ($1, $2, $3::jsonb)",
            [(i, f"event-{i}", f'{{"n": {i}}}') for i in range(100)],
        )
        await conn.copy_records_to_table("events", records=[(100, "copied", None)])
        rows = await conn.fetch(
            "SELECT id, name, doc->>'n' AS n FROM events WHERE id % 10 = 0 ORDER BY id"
        )
        assert [r["id"] for r in rows] == list(range(0, 101, 10))
        assert rows[3]["name"] == "event-30" and rows[3]["n"] == "30"
        table_schema = await conn.fetchval(
            "SELECT table_schema FROM information_schema.tables WHERE table_name = 'events'"
        )
        assert table_schema == pg_schema
    finally:
        await conn.close()
