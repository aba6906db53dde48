"""PostgreSQL: events -> PostgreSQLSink (COPY), and change data capture, each against a hand-written asyncpg loop.

Sink: bspump (MemorySource -> PostgreSQLSink, ``mode = insert``, one COPY and one transaction per batch, with its
default of two batches in flight; ``BENCH_SINK='{"concurrency": 1}'`` writes one at a time) against
a hand-written loop that turns the same dict events into tuples and calls ``copy_records_to_table`` in a
transaction per batch of the same size, on one connection. Each run writes ``--rows`` events into an emptied
table.

CDC: bspump (PostgreSQLCDCSource -> a sink that counts) against a hand-written loop that peeks the same window
(``pg_logical_slot_peek_binary_changes``), decodes every message with the same pgoutput decoder into the same
change events, and advances the slot (``pg_replication_slot_advance``) to the end of the last transaction of
each window. Every contestant reads a slot of its own, all created before the ``--changes`` inserts (in
transactions of 100 rows) were written, so each decodes the same WAL.

Contestants run ``--rounds`` times, interleaved; the best run of each counts. The server is found through
BSPUMP_TEST_POSTGRES_DSN (default postgresql://postgres@127.0.0.1:5432/postgres).

    python benchmarks/postgresql_sink.py [--rows 200000] [--changes 100000] [--batch 1000] [--rounds 3]

The last line printed is JSON: ``{"bspump_eps", "baseline_eps", "ratio", "cdc_eps", "cdc_baseline_eps",
"cdc_ratio", ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import time
import urllib.parse
import uuid
from typing import Any

import asyncpg

import bspump
import bspump.postgresql
from bspump.postgresql.cdc import _event
from bspump.postgresql.codecs import install_codecs
from bspump.postgresql.pgoutput import Change, Commit, PgOutputDecoder
from bspump.postgresql.slot import ADVANCE, FLUSH_LSN, PEEK
from bspump.testing import make_app

DSN = os.environ.get("BSPUMP_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
WINDOW = 10000
SINK: dict[str, Any] = json.loads(os.environ.get("BENCH_SINK", "{}"))


def settings() -> dict[str, Any]:
    url = urllib.parse.urlsplit(DSN)
    found = {"host": url.hostname or "127.0.0.1", "port": url.port or 5432, "user": url.username or "postgres",
             "database": url.path.lstrip("/") or "postgres"}
    if url.password:
        found["password"] = urllib.parse.unquote(url.password)
    return found


def app_with_connection() -> bspump.BSPumpApplication:
    app = make_app()
    app.pump_service.add_connection(bspump.postgresql.PostgreSQLConnection(app, "PostgreSQLConnection",
                                                                           config=settings()))
    return app


def events(rows: int) -> list[dict[str, Any]]:
    return [{"id": n, "name": f"name {n}", "amount": n * 0.5, "note": "x" * 40} for n in range(rows)]


# -- sink ------------------------------------------------------------------------------------------------------
async def bspump_sink(table: str, data: list[dict[str, Any]], batch: int) -> float:
    app = app_with_connection()
    pipeline = bspump.Pipeline(app, "Bench", config={"max_in_flight": 4 * batch})
    pipeline.build(bspump.MemorySource(app, pipeline, events=data, config={"batch_size": batch}),
                   bspump.postgresql.PostgreSQLSink(app, pipeline, config={"table": table, **SINK}))
    app.pump_service.add_pipeline(pipeline)
    started = time.perf_counter()
    code = await app.run_async()
    elapsed = time.perf_counter() - started
    assert code == 0 and pipeline.metrics()["out"] == len(data), pipeline.metrics()
    return elapsed


async def baseline_sink(table: str, data: list[dict[str, Any]], batch: int) -> float:
    started = time.perf_counter()
    connection = await asyncpg.connect(DSN)
    await install_codecs(connection)
    try:
        schema, name = table.split(".")
        columns = list(data[0])
        for start in range(0, len(data), batch):
            records = [tuple(event.values()) for event in data[start:start + batch]]
            async with connection.transaction():
                await connection.copy_records_to_table(name, schema_name=schema, columns=columns, records=records)
    finally:
        await connection.close()
    return time.perf_counter() - started


# -- CDC -------------------------------------------------------------------------------------------------------
class Counting(bspump.Sink):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.count = 0

    def put(self, batch: bspump.Batch) -> None:
        self.count += len(batch)
        batch.ack(len(batch))


async def bspump_cdc(slot: str, publication: str, changes: int) -> float:
    app = app_with_connection()
    pipeline = bspump.Pipeline(app, "BenchCDC")
    sink = Counting(app, pipeline)
    pipeline.build(bspump.postgresql.PostgreSQLCDCSource(app, pipeline, config={
        "slot": slot, "publication": publication, "create_slot": False, "create_publication": False,
        "window": WINDOW}), sink)
    app.pump_service.add_pipeline(pipeline)
    started = time.perf_counter()
    task = asyncio.create_task(app.run_async())
    while sink.count < changes:
        if task.done():
            raise RuntimeError(f"bspump stopped early: {task.result()}")
        await asyncio.sleep(0.002)
    elapsed = time.perf_counter() - started
    app.stop()
    await task
    return elapsed


async def baseline_cdc(slot: str, publication: str, changes: int) -> float:
    started = time.perf_counter()
    connection = await asyncpg.connect(DSN)
    count = 0
    try:
        while count < changes:
            upto = await connection.fetchval(FLUSH_LSN)
            decoder = PgOutputDecoder()
            end = 0
            out: list[Any] = []
            for _, data in await connection.fetch(PEEK, slot, upto, WINDOW, publication):
                message = decoder.decode(data)
                if isinstance(message, Change):
                    out.append(_event(message))
                elif isinstance(message, Commit):
                    end = message.end_lsn
            count += len(out)
            if end:
                await connection.fetchval(ADVANCE, slot, end)
    finally:
        await connection.close()
    return time.perf_counter() - started


async def prepare_cdc(schema: str, changes: int, slots: list[str]) -> None:
    connection = await asyncpg.connect(DSN)
    try:
        await connection.execute(f'CREATE TABLE "{schema}".changes (id int PRIMARY KEY, name text, amount float8)')
        await connection.execute(f'CREATE PUBLICATION {schema} FOR TABLE "{schema}".changes')
        for slot in slots:
            await connection.execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", slot)
        for start in range(0, changes, 100):
            await connection.execute(
                f'INSERT INTO "{schema}".changes SELECT g, \'name \' || g, g * 0.5 FROM generate_series($1::int, $2::int) g',
                start, min(start + 100, changes) - 1)
    finally:
        await connection.close()


async def cleanup(schema: str, slots: list[str]) -> None:
    connection = await asyncpg.connect(DSN)
    try:
        for slot in slots:
            await connection.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                                     "WHERE slot_name = $1", slot)
        await connection.execute(f"DROP PUBLICATION IF EXISTS {schema}")
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    table = f"{schema}.rows"
    slots = [f"{schema}_{side}_{r}" for r in range(args.rounds) for side in ("bspump", "baseline")]
    setup = await asyncpg.connect(DSN)
    await setup.execute(f'CREATE SCHEMA "{schema}"')
    await setup.execute(f'CREATE TABLE "{schema}".rows (id int, name text, amount float8, note text)')
    best: dict[str, float] = {}
    try:
        data = events(args.rows)
        for round_no in range(args.rounds):
            for label, contestant in (("bspump sink", bspump_sink), ("baseline sink", baseline_sink)):
                await setup.execute(f'TRUNCATE "{schema}".rows')
                elapsed = await contestant(table, data, args.batch)
                stored = await setup.fetchval(f'SELECT count(*) FROM "{schema}".rows')
                assert stored == args.rows, f"{label} stored {stored} rows"
                eps = args.rows / elapsed
                best[label] = max(best.get(label, 0.0), eps)
                print(f"{label} #{round_no + 1:<3} {args.rows:>8} rows in {elapsed:6.2f} s = {eps:>10,.0f} rows/s",
                      flush=True)
        await prepare_cdc(schema, args.changes, slots)
        for round_no in range(args.rounds):
            for label, contestant in (("bspump cdc", bspump_cdc), ("baseline cdc", baseline_cdc)):
                slot = f"{schema}_{label.split()[0]}_{round_no}"
                elapsed = await contestant(slot, schema, args.changes)
                eps = args.changes / elapsed
                best[label] = max(best.get(label, 0.0), eps)
                print(f"{label} #{round_no + 1:<4} {args.changes:>8} changes in {elapsed:6.2f} s = {eps:>10,.0f} "
                      "changes/s", flush=True)
    finally:
        await setup.close()
        await cleanup(schema, slots)
    return {
        "bspump_eps": round(best["bspump sink"]),
        "baseline_eps": round(best["baseline sink"]),
        "ratio": round(best["bspump sink"] / best["baseline sink"], 3),
        "cdc_eps": round(best["bspump cdc"]),
        "cdc_baseline_eps": round(best["baseline cdc"]),
        "cdc_ratio": round(best["bspump cdc"] / best["baseline cdc"], 3),
        "rows": args.rows, "changes": args.changes, "batch": args.batch, "window": WINDOW, "rounds": args.rounds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--changes", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
