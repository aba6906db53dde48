"""PostgreSQLCheckpointStore: a source's positions in a table of the database it reads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from bspump import CheckpointError, CheckpointStore

from .sql import qualified, split_table

if TYPE_CHECKING:
    from .connection import PostgreSQLConnection

DEFAULT_TABLE = "bspump_checkpoints"


class PostgreSQLCheckpointStore(CheckpointStore):
    """Positions as ``jsonb`` rows of ``table`` (``key text PRIMARY KEY, positions jsonb, updated_at``), created
    on first use. A save is one ``INSERT ... ON CONFLICT DO UPDATE``: atomic, and durable once it returns."""

    def __init__(self, connection: PostgreSQLConnection, table: str = DEFAULT_TABLE) -> None:
        self.connection = connection
        self.table = qualified(*split_table(table))
        self._created = False

    async def _ensure(self) -> None:
        if self._created:
            return
        async with self.connection.session() as session:
            await session.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} (key text PRIMARY KEY, positions jsonb NOT NULL, "
                "updated_at timestamptz NOT NULL DEFAULT now())")
        self._created = True

    async def load(self, key: str) -> dict[str, Any]:
        await self._ensure()
        async with self.connection.session() as session:
            raw = await session.fetchval(f"SELECT positions::text FROM {self.table} WHERE key = $1", key)
        if raw is None:
            return {}
        data = orjson.loads(raw)
        if not isinstance(data, dict):
            raise CheckpointError(f"checkpoint {key!r} in {self.table} does not hold an object; delete its row to "
                                  "start from the beginning")
        return data

    async def save(self, key: str, positions: Mapping[str, Any]) -> None:
        await self._ensure()
        async with self.connection.session() as session:
            await session.execute(
                f"INSERT INTO {self.table} (key, positions) VALUES ($1, $2::text::jsonb) ON CONFLICT (key) DO UPDATE "
                "SET positions = EXCLUDED.positions, updated_at = now()", key, orjson.dumps(dict(positions)).decode())
