"""Smoke test of an installed bspump-postgresql wheel (run by ``nox -s wheel_install``, not by pytest).

Runs in a venv holding only bspump-core and bspump-postgresql from their wheels: a pipeline writes events into
a new table through ``PostgreSQLSink`` (COPY), a second reads them back through ``PostgreSQLSource``, and both
must agree. It needs a server (``BSPUMP_TEST_POSTGRES_DSN``, default postgresql://postgres@127.0.0.1:5432/postgres);
without one it exits 77 (skipped).
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid

import asyncpg

import bspump
import bspump.postgresql
from bspump.testing import run_app

SKIPPED = 77
EVENTS = [{"id": n, "item": f"item-{n}"} for n in range(50)]


def application(dsn: str) -> bspump.BSPumpApplication:
    app = bspump.BSPumpApplication(load_plugins=False)
    app.get_service("bspump.PumpService").add_connection(
        bspump.postgresql.PostgreSQLConnection(app, "PostgreSQLConnection", config={"dsn": dsn}))
    return app


async def run(app: bspump.BSPumpApplication, pipeline: bspump.Pipeline) -> None:
    app.get_service("bspump.PumpService").add_pipeline(pipeline)
    assert await run_app(app, timeout=120) == 0, f"pipeline {pipeline.id} failed"


async def main() -> int:
    dsn = os.environ.get("BSPUMP_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        db = await asyncpg.connect(dsn, timeout=5)
    except (TimeoutError, OSError, asyncpg.PostgresError):
        print("skipped: no PostgreSQL server answers at BSPUMP_TEST_POSTGRES_DSN (or its default)")
        return SKIPPED
    print(f"bspump {bspump.__version__}; bspump.postgresql from {os.path.dirname(bspump.postgresql.__file__)}")
    table = f"bspump_smoke_{uuid.uuid4().hex[:8]}"
    try:
        await db.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, item text NOT NULL)")
        app = application(dsn)
        writer = bspump.Pipeline(app, "Write")
        writer.build(bspump.MemorySource(app, writer, events=[dict(e) for e in EVENTS]),
                     bspump.postgresql.PostgreSQLSink(app, writer, config={"table": table}))
        await run(app, writer)

        app = application(dsn)
        reader = bspump.Pipeline(app, "Read")
        sink = bspump.MemorySink(app, reader)
        reader.build(bspump.postgresql.PostgreSQLSource(app, reader, config={
            "query": f"SELECT id, item FROM {table} ORDER BY id"}), sink)
        await run(app, reader)
    finally:
        await db.execute(f"DROP TABLE IF EXISTS {table}")
        await db.close()
    received = [dict(event) for event in sink.events]
    if received != EVENTS:
        print(f"error: wrote {len(EVENTS)} rows, read back {len(received)} that differ", file=sys.stderr)
        return 1
    print(f"ok: {len(EVENTS)} rows through PostgreSQLSink and back through PostgreSQLSource ({table})")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
