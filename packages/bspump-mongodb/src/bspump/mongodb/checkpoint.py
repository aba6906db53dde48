"""MongoDBCheckpointStore: sources' positions kept in a collection of the deployment they read."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from bspump import CheckpointStore

from .connection import MongoDBConnection


class MongoDBCheckpointStore(CheckpointStore):
    """One document per key in ``database.collection`` of ``connection``: ``{_id: key, positions: {...},
    updated: <UTC time>}``.

    ``save`` replaces that one document (an upsert), which MongoDB applies atomically, with the connection's
    write concern (``majority`` on a replica set): after a crash or a failover, ``load`` returns the previous
    or the new positions, never a mix. Keeping positions next to the data they describe means a restore or a
    move of the deployment carries them along, and several hosts running the same pipeline in turn share
    them.
    """

    def __init__(self, connection: MongoDBConnection, collection: str = "bspump_checkpoints",
                 database: str | None = None) -> None:
        self.connection = connection
        self.collection_name = collection
        self.database_name = database

    def _collection(self) -> Any:
        return self.connection.collection(self.collection_name, self.database_name)

    async def load(self, key: str) -> dict[str, Any]:
        found = await self._collection().find_one({"_id": key})
        if found is None:
            return {}
        positions = found.get("positions")
        return dict(positions) if isinstance(positions, Mapping) else {}

    async def save(self, key: str, positions: Mapping[str, Any]) -> None:
        document = {"_id": key, "positions": dict(positions), "updated": datetime.datetime.now(datetime.UTC)}
        await self._collection().replace_one({"_id": key}, document, upsert=True)

    def __repr__(self) -> str:
        database = self.database_name or self.connection.default_database
        return f"<MongoDBCheckpointStore {database}.{self.collection_name} on {self.connection.id!r}>"
