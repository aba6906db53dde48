"""Smoke: MongoDB wire protocol with pymongo's AsyncMongoClient.

FerretDB (BSPUMP_TEST_MONGODB_URI) for CRUD; SecantusDB (BSPUMP_TEST_MONGODB_CS_URI)
for change streams and transactions.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pymongo import AsyncMongoClient

pytestmark = [pytest.mark.smoke, pytest.mark.mongodb]

Doc = dict[str, Any]


async def test_crud_ferretdb(mongodb_uri: str, mongo_db_name: str) -> None:
    client: AsyncMongoClient[Doc] = AsyncMongoClient(
        mongodb_uri, serverSelectionTimeoutMS=5000
    )
    try:
        coll = client[mongo_db_name]["items"]
        result = await coll.insert_many(
            [{"_id": i, "n": i, "even": i % 2 == 0} for i in range(50)]
        )
        assert len(result.inserted_ids) == 50
        await coll.create_index("n")
        assert await coll.count_documents({"even": True}) == 25
        docs = await coll.find({"n": {"$gte": 45}}).sort("n", -1).to_list()
        assert [d["n"] for d in docs] == [49, 48, 47, 46, 45]
        await coll.update_one({"_id": 3}, {"$set": {"tag": "x"}})
        assert (await coll.find_one({"_id": 3}) or {}).get("tag") == "x"
        agg = await (
            await coll.aggregate([{"$group": {"_id": "$even", "c": {"$sum": 1}}}])
        ).to_list()
        assert sorted(d["c"] for d in agg) == [25, 25]
    finally:
        await client.close()


async def test_change_stream_and_transaction_secantusdb(
    mongodb_cs_uri: str, mongo_db_name: str
) -> None:
    client: AsyncMongoClient[Doc] = AsyncMongoClient(
        mongodb_cs_uri, serverSelectionTimeoutMS=5000
    )
    try:
        coll = client[mongo_db_name]["events"]
        await coll.insert_one(
            {"_id": "seed"}
        )  # the collection exists before the transaction
        async with await coll.watch() as stream:
            await coll.insert_one({"_id": "a", "v": 1})
            async with (
                client.start_session() as session,
                await session.start_transaction(),
            ):
                await coll.insert_one({"_id": "b", "v": 2}, session=session)
                await coll.update_one(
                    {"_id": "a"}, {"$inc": {"v": 10}}, session=session
                )
            changes: list[Doc] = []
            async with asyncio.timeout(20):
                while len(changes) < 3:
                    change = await stream.try_next()
                    if change is not None:
                        changes.append(change)
        assert [c["operationType"] for c in changes] == ["insert", "insert", "update"]
        assert changes[0]["fullDocument"] == {"_id": "a", "v": 1}
        assert (await coll.find_one({"_id": "a"}) or {})["v"] == 11
    finally:
        await client.close()
