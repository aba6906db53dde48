"""Events -> MongoDBSink, against a hand-written ``insert_many(ordered=False)`` loop with the same batch size,
the same server and the same write concern, in the same run.

- bspump: a source hands over prepared batches of ``--batch`` events; MongoDBSink (``operation = insert``)
  writes each with one unordered bulk insert and acknowledges it once the server confirmed it; the run ends
  when every event is acknowledged (the application drained and stopped).
- baseline: one ``AsyncMongoClient``, ``await collection.insert_many(batch, ordered=False)`` per batch, one
  after the other (what the sink does with its default ``concurrency = 1``).

Both write into a fresh collection per run, with the write concern the connection chooses for that server
(``majority`` on a replica set, ``1`` on a standalone such as FerretDB). Events (~100 bytes: a number, a
short text, a nested document, a timestamp) are built before the clock starts. Each contestant runs
``--rounds`` times, interleaved, and the best run counts. Times include creating the client and its first
round trip on both sides.

    python benchmarks/mongodb_sink.py [--uri mongodb://127.0.0.1:27017/] [--events 100000] [--batch 1000]

The URI defaults to BSPUMP_TEST_MONGODB_URI (FerretDB on 127.0.0.1:27017). The last line printed is JSON:
``{"bspump_eps", "baseline_eps", "ratio", "events", "batch", "rounds", "server"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import logging
import os
import time
import uuid
from typing import Any

from pymongo import AsyncMongoClient

import bspump
import bspump.mongodb
from bspump.testing import make_app

DATABASE = "bspump_bench"


def make_batches(events: int, batch: int) -> list[list[dict[str, Any]]]:
    now = datetime.datetime.now(datetime.UTC)
    documents = [{"n": n, "text": f"event number {n}", "meta": {"host": "web-1", "status": 200}, "at": now}
                 for n in range(events)]
    return [documents[i:i + batch] for i in range(0, events, batch)]


class Prepared(bspump.Source):
    """Hands over the prepared batches, then is exhausted."""

    def __init__(self, *args: Any, batches: list[list[dict[str, Any]]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches = batches

    async def main(self) -> None:
        for batch in self.batches:
            await self.emit(batch)


async def run_bspump(uri: str, batches: list[list[dict[str, Any]]], collection: str) -> float:
    app = make_app()
    app.pump_service.add_connection(bspump.mongodb.MongoDBConnection(
        app, "MongoDBConnection", config={"uri": uri, "database": DATABASE}))
    pipeline = bspump.Pipeline(app, "Bench", config={"max_in_flight": 20 * len(batches[0])})
    sink = bspump.mongodb.MongoDBSink(app, pipeline, config={"collection": collection})
    pipeline.build(Prepared(app, pipeline, batches=batches), sink)
    app.pump_service.add_pipeline(pipeline)
    started = time.perf_counter()
    code = await app.run_async()
    elapsed = time.perf_counter() - started
    total = sum(map(len, batches))
    if code != 0 or pipeline.metrics()["out"] != total:
        raise SystemExit(f"bspump run failed: exit code {code}, {pipeline.metrics()}")
    return elapsed


async def write_concern_of(uri: str) -> Any:
    """The write concern MongoDBConnection chooses for this server (so the baseline waits for the same)."""
    app = make_app()
    connection = bspump.mongodb.MongoDBConnection(app, "Probe", config={"uri": uri})
    await connection.connect()
    try:
        return connection.write_concern
    finally:
        await connection.disconnect()


async def run_baseline(uri: str, batches: list[list[dict[str, Any]]], collection: str, concern: Any) -> float:
    started = time.perf_counter()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
    try:
        await client.admin.command("hello")
        target = client.get_database(DATABASE, write_concern=concern)[collection]
        for batch in batches:
            await target.insert_many(batch, ordered=False)
        return time.perf_counter() - started
    finally:
        await client.close()


async def count(uri: str, collection: str) -> int:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    try:
        return await client[DATABASE][collection].count_documents({})
    finally:
        await client.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uri", default=os.environ.get("BSPUMP_TEST_MONGODB_URI", "mongodb://127.0.0.1:27017/"))
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    concern = await write_concern_of(args.uri)
    best: dict[str, float] = {}
    try:
        for round_number in range(1, args.rounds + 1):
            for name in ("baseline", "bspump"):
                batches = make_batches(args.events, args.batch)  # fresh documents: insert_many adds _id
                collection = f"{name}_{uuid.uuid4().hex[:8]}"
                if name == "bspump":
                    elapsed = await run_bspump(args.uri, batches, collection)
                else:
                    elapsed = await run_baseline(args.uri, batches, collection, concern)
                stored = await count(args.uri, collection)
                if stored != args.events:
                    raise SystemExit(f"{name}: {stored} of {args.events} documents stored")
                eps = args.events / elapsed
                best[name] = max(best.get(name, 0.0), eps)
                print(f"round {round_number} {name:8s} {eps:10.0f} events/s ({elapsed:.2f} s)", flush=True)
    finally:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(args.uri)
        await client.drop_database(DATABASE)
        await client.close()
    ratio = best["bspump"] / best["baseline"]
    print(f"best: bspump {best['bspump']:.0f} events/s, baseline {best['baseline']:.0f} events/s, ratio {ratio:.3f}"
          f" (write concern {concern.document or {'w': 1}})")
    print(json.dumps({"bspump_eps": round(best["bspump"]), "baseline_eps": round(best["baseline"]),
                      "ratio": round(ratio, 3), "events": args.events, "batch": args.batch, "rounds": args.rounds,
                      "server": args.uri.split("@")[-1]}))


if __name__ == "__main__":
    asyncio.run(main())
