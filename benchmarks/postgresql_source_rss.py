"""PostgreSQLSource's memory stays flat: the peak RSS of a 1,000,000-row run against a 100,000-row run.

Each run is a fresh Python process: PostgreSQLSource (``SELECT id, name, pad FROM t WHERE id <= $1 ORDER BY id``,
batches of 1000 through the server-side cursor) -> NullSink; the process reports its peak RSS (``ru_maxrss``) and
its rows/s. The table (1,000,000 rows of ~150 bytes) is created in a schema of its own and dropped afterwards.
The server is found through BSPUMP_TEST_POSTGRES_DSN (default postgresql://postgres@127.0.0.1:5432/postgres).

    python benchmarks/postgresql_source_rss.py [--small 100000] [--large 1000000]

The last line printed is JSON: ``{"rss_small_mb", "rss_large_mb", "rss_ratio", "small_rows", "large_rows",
"large_rows_per_s"}``; the acceptance bound is ``rss_ratio <= 1.2``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
import urllib.parse
import uuid
from typing import Any

import asyncpg

DSN = os.environ.get("BSPUMP_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def settings() -> dict[str, Any]:
    url = urllib.parse.urlsplit(DSN)
    found = {"host": url.hostname or "127.0.0.1", "port": url.port or 5432, "user": url.username or "postgres",
             "database": url.path.lstrip("/") or "postgres"}
    if url.password:
        found["password"] = urllib.parse.unquote(url.password)
    return found


def child(schema: str, rows: int) -> None:
    """One run, in this process: print rows, seconds and peak RSS as JSON."""
    import bspump
    import bspump.postgresql
    from bspump.testing import make_app

    app = make_app()
    app.pump_service.add_connection(bspump.postgresql.PostgreSQLConnection(app, "PostgreSQLConnection",
                                                                           config=settings()))
    pipeline = bspump.Pipeline(app, "Rss")
    sink = bspump.NullSink(app, pipeline)
    pipeline.build(bspump.postgresql.PostgreSQLSource(app, pipeline, config={
        "query": f'SELECT id, name, pad FROM "{schema}".t WHERE id <= $1 ORDER BY id', "params": json.dumps([rows]),
        "batch_size": 1000}), sink)
    app.pump_service.add_pipeline(pipeline)
    started = time.perf_counter()
    code = app.run()
    elapsed = time.perf_counter() - started
    assert code == 0 and sink.count == rows, (code, sink.count)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"rows": rows, "seconds": elapsed, "rss_kb": peak_kb}))


def run_child(schema: str, rows: int) -> dict[str, Any]:
    output = subprocess.run([sys.executable, __file__, "--child", schema, str(rows)], check=True,
                            capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return result


async def setup(schema: str, rows: int) -> None:
    connection = await asyncpg.connect(DSN)
    try:
        await connection.execute(f'CREATE SCHEMA "{schema}"')
        await connection.execute(f'CREATE TABLE "{schema}".t AS SELECT g AS id, \'name \' || g AS name, '
                                 f"repeat('x', 120) AS pad FROM generate_series(1, $1::int) g", rows)
    finally:
        await connection.close()


async def drop(schema: str) -> None:
    connection = await asyncpg.connect(DSN)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    args = parser.parse_args()
    schema = f"rss_{uuid.uuid4().hex[:8]}"
    asyncio.run(setup(schema, args.large))
    try:
        small = run_child(schema, args.small)
        large = run_child(schema, args.large)
    finally:
        asyncio.run(drop(schema))
    for run in (small, large):
        print(f"{run['rows']:>9} rows in {run['seconds']:6.2f} s = {run['rows'] / run['seconds']:>9,.0f} rows/s, "
              f"peak RSS {run['rss_kb'] / 1024:6.1f} MB")
    print(json.dumps({"rss_small_mb": round(small["rss_kb"] / 1024, 1), "rss_large_mb": round(large["rss_kb"] / 1024, 1),
                      "rss_ratio": round(large["rss_kb"] / small["rss_kb"], 3), "small_rows": args.small,
                      "large_rows": args.large, "large_rows_per_s": round(args.large / large["seconds"])}))


if __name__ == "__main__":
    main()
