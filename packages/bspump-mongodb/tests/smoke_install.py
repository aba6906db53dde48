"""Smoke test of an installed bspump-mongodb wheel (run by ``nox -s wheel_install``, not by pytest).

Runs in a venv holding only bspump-core and bspump-mongodb from their wheels: a pipeline writes events into
a new collection through ``MongoDBSink``, a second reads them back through ``MongoDBSource``, and both must
agree. It needs a server (``BSPUMP_TEST_MONGODB_URI``, default mongodb://127.0.0.1:27017/); without one it
exits 77 (skipped).
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid

from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

import bspump
import bspump.mongodb
from bspump.testing import run_app

SKIPPED = 77
EVENTS = [{"_id": n, "item": f"item-{n}"} for n in range(50)]


def application(uri: str, database: str) -> bspump.BSPumpApplication:
    app = bspump.BSPumpApplication(load_plugins=False)
    app.get_service("bspump.PumpService").add_connection(
        bspump.mongodb.MongoDBConnection(app, "MongoDBConnection", config={"uri": uri, "database": database}))
    return app


async def run(app: bspump.BSPumpApplication, pipeline: bspump.Pipeline) -> None:
    app.get_service("bspump.PumpService").add_pipeline(pipeline)
    assert await run_app(app, timeout=120) == 0, f"pipeline {pipeline.id} failed"


async def main() -> int:
    uri = os.environ.get("BSPUMP_TEST_MONGODB_URI", "mongodb://127.0.0.1:27017/")
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(uri, serverSelectionTimeoutMS=3000)
    try:
        await client.admin.command("ping")
    except PyMongoError:
        print(f"skipped: no MongoDB server answers at {uri} (BSPUMP_TEST_MONGODB_URI)")
        await client.close()
        return SKIPPED
    print(f"bspump {bspump.__version__}; bspump.mongodb from {os.path.dirname(bspump.mongodb.__file__)}")
    database = f"bspump_smoke_{uuid.uuid4().hex[:8]}"
    try:
        app = application(uri, database)
        writer = bspump.Pipeline(app, "Write")
        writer.build(bspump.MemorySource(app, writer, events=[dict(e) for e in EVENTS]),
                     bspump.mongodb.MongoDBSink(app, writer, config={"collection": "orders"}))
        await run(app, writer)

        app = application(uri, database)
        reader = bspump.Pipeline(app, "Read")
        sink = bspump.MemorySink(app, reader)
        reader.build(bspump.mongodb.MongoDBSource(app, reader, config={"collection": "orders"}), sink)
        await run(app, reader)
    finally:
        await client.drop_database(database)
        await client.close()
    received = sorted(({"_id": e["_id"], "item": e["item"]} for e in sink.events), key=lambda e: e["_id"])
    if received != EVENTS:
        print(f"error: wrote {len(EVENTS)} documents, read back {len(received)} that differ", file=sys.stderr)
        return 1
    print(f"ok: {len(EVENTS)} documents through MongoDBSink and back through MongoDBSource ({database})")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
