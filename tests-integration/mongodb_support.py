"""What the MongoDB integration tests share: probing what a server supports, and small client helpers.

Each helper opens its own ``AsyncMongoClient`` in the running event loop (the conformance kit runs every test
in a fresh loop) and closes it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.errors import OperationFailure


@asynccontextmanager
async def mongo_client(uri: str) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, serverSelectionTimeoutMS=10_000, tz_aware=True)
    try:
        yield client
    finally:
        await client.close()


async def change_stream_support(uri: str) -> str | None:
    """``None`` if the server has change streams, else why not (the server's own message)."""
    async with mongo_client(uri) as client:
        collection = client[f"bt_probe_{uuid.uuid4().hex[:8]}"]["probe"]
        try:
            stream = await collection.watch(max_await_time_ms=10)
            await stream.close()
        except OperationFailure as exc:
            return f"the server has no change streams ({exc.code}: {str(exc).split(', full error')[0]})"
        finally:
            await client.drop_database(collection.database.name)
    return None


async def validator_support(uri: str) -> bool:
    """Whether the server enforces collection validators (FerretDB 1.x answers NotImplemented)."""
    async with mongo_client(uri) as client:
        database = client[f"bt_probe_{uuid.uuid4().hex[:8]}"]
        try:
            await database.create_collection("probe", validator={"n": {"$gte": 0}})
        except OperationFailure:
            return False
        finally:
            await client.drop_database(database.name)
    return True


async def operation_time(uri: str, database: str) -> int:
    """The server's current cluster time, in seconds (a ``start_at`` for change streams)."""
    async with mongo_client(uri) as client:
        reply = await client[database].command("ping")
        ts = reply.get("operationTime") or reply["$clusterTime"]["clusterTime"]
        return int(ts.time)
