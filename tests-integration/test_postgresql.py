"""bspump-postgresql against the real server: change data capture (order, SIGKILLs, idle WAL, snapshot, slot
health), the sink (bad rows, a server restart), the LISTEN source, the lookup and the seed page's settings."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from test_postgresql_conformance import connection_settings

import bspump
import bspump.postgresql
from bspump.postgresql import change
from bspump.testing import make_app, run_until, wait_for, write_conf

pytestmark = [pytest.mark.postgresql]

DSN = os.environ.get("BSPUMP_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def pg_app(**connection: Any) -> bspump.BSPumpApplication:
    """An application with ``PostgreSQLConnection`` to the test server (reconnecting quickly)."""
    app = make_app()
    app.pump_service.add_connection(bspump.postgresql.PostgreSQLConnection(app, "PostgreSQLConnection", config={
        **connection_settings(DSN), "reconnect_initial": 0.1, "reconnect_max": 1.0, **connection}))
    return app


@pytest.fixture
async def db(postgres_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(postgres_dsn)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def slot_name(postgres_dsn: str) -> AsyncIterator[str]:
    """A slot and publication name; both are dropped after the test."""
    name = f"it_{uuid.uuid4().hex[:12]}"
    yield name
    connection = await asyncpg.connect(postgres_dsn)
    try:
        for _ in range(50):  # a killed worker's backend may hold the slot for a moment
            try:
                await connection.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                                         "WHERE slot_name = $1", name)
                break
            except asyncpg.ObjectInUseError:
                await asyncio.sleep(0.1)
        await connection.execute(f"DROP PUBLICATION IF EXISTS {name}")
    finally:
        await connection.close()


async def slot_row(db: asyncpg.Connection, slot: str) -> asyncpg.Record | None:
    return await db.fetchrow(
        "SELECT confirmed_flush_lsn, restart_lsn, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint "
        "AS retained FROM pg_replication_slots WHERE slot_name = $1", slot)


def cdc_pipeline(app: bspump.BSPumpApplication, slot: str, tables: str, sink: Any = None,
                 **config: Any) -> bspump.Pipeline:
    pipeline = bspump.Pipeline(app, "Changes")
    source = bspump.postgresql.PostgreSQLCDCSource(app, pipeline, config={
        "slot": slot, "publication": slot, "tables": tables, "poll_interval": "50ms", "commit_interval": "100ms",
        **config})
    pipeline.build(source, sink(pipeline) if sink else bspump.MemorySink(app, pipeline, id="Received"))
    app.pump_service.add_pipeline(pipeline)
    return pipeline


# -- change data capture -----------------------------------------------------------------------------------


async def test_cdc_changes_arrive_in_commit_order_with_their_lsns(db: asyncpg.Connection, pg_schema: str,
                                                                  slot_name: str) -> None:
    items, audit = f'"{pg_schema}".items', f'"{pg_schema}".audit'
    await db.execute(f"CREATE TABLE {items} (id int PRIMARY KEY, v text, doc jsonb)")
    await db.execute(f"CREATE TABLE {audit} (id int PRIMARY KEY, v text)")
    await db.execute(f"ALTER TABLE {audit} REPLICA IDENTITY FULL")
    app = pg_app()
    pipeline = cdc_pipeline(app, slot_name, f"{pg_schema}.items, {pg_schema}.audit")
    sink = pipeline.sink
    assert isinstance(sink, bspump.MemorySink)

    async def write() -> None:
        await wait_for(lambda: isinstance(pipeline.sources[0], bspump.postgresql.PostgreSQLCDCSource)
                       and pipeline.sources[0].peeks > 0, 20, "the slot created and read")
        async with db.transaction():
            await db.execute(f"INSERT INTO {items} VALUES (1, 'a', '{{\"k\": 1}}'), (2, 'b', NULL)")
        await db.execute(f"UPDATE {items} SET v = 'a2' WHERE id = 1")
        await db.execute(f"DELETE FROM {items} WHERE id = 2")
        async with db.transaction():
            await db.execute(f"INSERT INTO {items} VALUES (3, 'c', NULL)")
            await db.execute(f"UPDATE {items} SET v = 'c2' WHERE id = 3")
            await db.execute(f"DELETE FROM {items} WHERE id = 1")
            await db.execute(f"INSERT INTO {audit} VALUES (1, 'x')")
        await db.execute(f"UPDATE {audit} SET v = 'y' WHERE id = 1")
        await db.execute(f"DELETE FROM {audit} WHERE id = 1")

    writer = asyncio.create_task(write())
    await run_until(app, lambda: len(sink.events) >= 10 or (writer.done() and writer.exception() is not None), 30,
                    "ten changes")
    await writer
    got = [(e["table"], e["op"], e["key"]) for e in sink.events]
    assert got == [("items", "insert", {"id": 1}), ("items", "insert", {"id": 2}), ("items", "update", {"id": 1}),
                   ("items", "delete", {"id": 2}), ("items", "insert", {"id": 3}), ("items", "update", {"id": 3}),
                   ("items", "delete", {"id": 1}), ("audit", "insert", {"id": 1}), ("audit", "update", {"id": 1}),
                   ("audit", "delete", {"id": 1})]
    assert sink.events[0]["row"] == {"id": 1, "v": "a", "doc": {"k": 1}} and sink.events[0]["schema"] == pg_schema
    assert sink.events[8]["old"] == {"id": 1, "v": "x"} and sink.events[8]["row"] == {"id": 1, "v": "y"}
    assert sink.events[9]["old"] == {"id": 1, "v": "y"} and sink.events[9]["row"] is None
    contexts = sink.contexts
    commits = [c[change.COMMIT_LSN] for c in contexts]
    assert commits == sorted(commits)
    assert len(set(commits)) == 6  # six transactions, their changes grouped under one commit LSN each
    assert [c[change.LSN] for c in contexts] == sorted(c[change.LSN] for c in contexts)
    assert all(c[change.LSN] <= c[change.COMMIT_LSN] for c in contexts)
    times = [c[change.COMMIT_TIME] for c in contexts]
    assert times == sorted(times) and times[0].tzinfo is not None
    assert len({c[change.XID] for c in contexts}) == 6
    row = await slot_row(db, slot_name)
    assert row is not None and row["confirmed_flush_lsn"] > max(commits)  # acknowledged, so advanced past all


async def test_cdc_idle_tables_hold_no_wal_while_other_databases_write(db: asyncpg.Connection, pg_schema: str,
                                                                       slot_name: str) -> None:
    await db.execute(f'CREATE TABLE "{pg_schema}".quiet (id int PRIMARY KEY)')
    control = f"{slot_name}_control"  # a slot nobody reads: what the WAL would be without advancing
    other = f"it_other_{uuid.uuid4().hex[:8]}"
    await db.execute(f"CREATE DATABASE {other}")
    app = pg_app()
    pipeline = cdc_pipeline(app, slot_name, f"{pg_schema}.quiet", health_interval="100ms")
    source = pipeline.sources[0]
    assert isinstance(source, bspump.postgresql.PostgreSQLCDCSource)
    task = asyncio.create_task(app.run_async())
    try:
        await wait_for(lambda: source.peeks > 0, 20, "the slot created and read")
        await db.execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", control)
        start = await db.fetchval("SELECT pg_current_wal_lsn()")
        writer = await asyncpg.connect(DSN.rsplit("/", 1)[0] + f"/{other}")
        try:
            for _ in range(4):
                await writer.execute("CREATE TABLE IF NOT EXISTS w (g int, pad text)")
                await writer.execute("INSERT INTO w SELECT g, repeat('x', 200) FROM generate_series(1, 50000) g")
        finally:
            await writer.close()
        # The server logs the running transactions (which let a slot's restart_lsn move) every 15 s while WAL is
        # written, and at each checkpoint: a checkpoint saves the test the wait.
        await db.execute("CHECKPOINT")
        written = await db.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1)::bigint", start)
        assert written > 40 * 1024 * 1024

        retained: list[int] = []

        async def bounded() -> bool:
            row = await slot_row(db, slot_name)
            assert row is not None
            retained.append(int(row["retained"]))
            return retained[-1] < written // 4

        deadline = time.monotonic() + 30
        while not await bounded():
            assert time.monotonic() < deadline, f"the idle slot still holds {retained[-1]} of {written} bytes"
            await asyncio.sleep(0.2)
        held = await slot_row(db, control)
        assert held is not None and held["retained"] >= written
        await wait_for(lambda: "slot_retained_bytes" in source.gauges(), 10, "the slot's health gauges")
        print(f"idle CDC slot: {written / 2**20:.1f} MB written to another database; the pipeline's slot retains "
              f"{retained[-1] / 2**20:.1f} MB, an unread slot {held['retained'] / 2**20:.1f} MB")
        assert not task.done()
    finally:
        app.stop()
        await asyncio.wait_for(task, 30)
        await db.execute("SELECT pg_drop_replication_slot($1)", control)
        await db.execute(f"DROP DATABASE {other}")


async def test_cdc_snapshot_then_stream_gives_duplicates_never_gaps(db: asyncpg.Connection, pg_schema: str,
                                                                   slot_name: str) -> None:
    table = f'"{pg_schema}".snap'
    await db.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v int)")
    await db.execute(f"INSERT INTO {table} SELECT g, 0 FROM generate_series(1, 5000) g")
    config = {"snapshot": True, "batch_size": 200, "checkpoint_table": f"{pg_schema}.checkpoints"}
    app = pg_app()
    pipeline = cdc_pipeline(app, slot_name, f"{pg_schema}.snap", **config)
    sink = pipeline.sink
    assert isinstance(sink, bspump.MemorySink)

    async def change_meanwhile() -> None:
        await wait_for(lambda: len(sink.events) > 0, 20, "the snapshot under way")
        for n in range(5001, 5101):
            await db.execute(f"INSERT INTO {table} VALUES ($1, 1)", n)
        await db.execute(f"UPDATE {table} SET v = 2 WHERE id <= 100")

    writer = asyncio.create_task(change_meanwhile())
    final = {n: 0 for n in range(1, 5001)} | {n: 1 for n in range(5001, 5101)} | {n: 2 for n in range(1, 101)}

    def state() -> dict[int, int]:
        rows: dict[int, int] = {}
        for event in sink.events:  # applying the events in order rebuilds the table
            rows[event["row"]["id"]] = event["row"]["v"]
        return rows

    await run_until(app, lambda: writer.done() and state() == final, 60, "the table rebuilt from the events")
    await writer
    ops = Counter(e["op"] for e in sink.events)
    assert ops["snapshot"] >= 5000 and ops["update"] == 100
    assert await db.fetchval(f'SELECT positions->>\'done\' FROM "{pg_schema}".checkpoints') == "true"
    # Started again: the snapshot is not taken twice.
    app = pg_app()
    again = cdc_pipeline(app, slot_name, f"{pg_schema}.snap", **config)
    sink = again.sink
    assert isinstance(sink, bspump.MemorySink)
    await db.execute(f"INSERT INTO {table} VALUES (9999, 9)")
    await run_until(app, lambda: len(sink.events) >= 1, 20, "the new insert")
    assert [e["op"] for e in sink.events] == ["insert"]


class NeverAcknowledging(bspump.Sink):
    """Keeps every event in flight: the slot cannot advance past them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.received = 0

    def put(self, batch: bspump.Batch) -> None:
        self.received += len(batch)


async def test_cdc_warns_before_max_slot_wal_keep_size_invalidates_the_slot(
        db: asyncpg.Connection, pg_schema: str, slot_name: str, caplog: pytest.LogCaptureFixture) -> None:
    table = f'"{pg_schema}".held'
    await db.execute(f"CREATE TABLE {table} (id int PRIMARY KEY)")
    await db.execute(f'CREATE TABLE "{pg_schema}".filler (g int, pad text)')
    await db.execute("ALTER SYSTEM SET max_slot_wal_keep_size = '64MB'")
    await db.execute("SELECT pg_reload_conf()")
    app = pg_app()
    pipeline = bspump.Pipeline(app, "Held", config={"drain_timeout": "100ms"})
    source = bspump.postgresql.PostgreSQLCDCSource(app, pipeline, config={
        "slot": slot_name, "publication": slot_name, "tables": f"{pg_schema}.held", "poll_interval": "50ms",
        "health_interval": "100ms"})
    sink = NeverAcknowledging(app, pipeline)
    pipeline.build(source, sink)
    app.pump_service.add_pipeline(pipeline)
    task = asyncio.create_task(app.run_async())
    try:
        await wait_for(lambda: source.peeks > 0, 20, "the slot created and read")
        await db.execute(f"INSERT INTO {table} VALUES (1)")
        await wait_for(lambda: sink.received == 1, 20, "the change in flight")
        with caplog.at_level(logging.WARNING, logger="bspump.postgresql"):
            for _ in range(6):  # ~55 MB of WAL for a table outside the publication
                await db.execute(f'INSERT INTO "{pg_schema}".filler SELECT g, repeat(\'x\', 200) '
                                 "FROM generate_series(1, 35000) g")
            await wait_for(lambda: "max_slot_wal_keep_size" in caplog.text, 20, "the warning")
        gauges = source.gauges()
        assert gauges["slot_retained_bytes"] > 0.8 * 64 * 2**20 and gauges["slot_wal_status"] <= 2
        assert 0 <= gauges["slot_safe_wal_bytes"] < 64 * 2**20  # a limit now applies (-1: none)
        warning = next(r.getMessage() for r in caplog.records if "max_slot_wal_keep_size" in r.getMessage())
        print(f"slot health warning: {warning}")
        assert slot_name in warning
    finally:
        await db.execute("ALTER SYSTEM RESET max_slot_wal_keep_size")
        await db.execute("SELECT pg_reload_conf()")
        app.stop()
        await asyncio.wait_for(task, 30)


# -- SIGKILL mid-stream ----------------------------------------------------------------------------------------


class ChangeToLogRow(bspump.Processor):
    """One row of the audit log per change: what changed, and the commit it belongs to."""

    def process(self, context: bspump.Context, event: Any) -> Any:
        row = event["row"] or event["old"] or {}
        return {"op": event["op"], "id": (event["key"] or {}).get("id"), "v": row.get("v"),
                "commit_lsn": context[change.COMMIT_LSN], "worker": os.getpid()}


def run_cdc_worker(settings: str, schema: str, slot: str) -> int:
    """The pump in a process of its own (``python test_postgresql.py cdc-worker ...``): changes of
    ``schema.src`` appended to ``schema.log`` by COPY."""
    app = make_app()
    app.pump_service.add_connection(bspump.postgresql.PostgreSQLConnection(
        app, "PostgreSQLConnection", config={**json.loads(settings), "reconnect_initial": 0.1}))
    pipeline = bspump.Pipeline(app, "Kill")
    pipeline.build(
        bspump.postgresql.PostgreSQLCDCSource(app, pipeline, config={
            "slot": slot, "publication": slot, "tables": f"{schema}.src", "poll_interval": "20ms",
            "commit_interval": "50ms", "batch_size": 100}),
        ChangeToLogRow(app, pipeline),
        bspump.postgresql.PostgreSQLSink(app, pipeline, config={"table": f"{schema}.log"}))
    app.pump_service.add_pipeline(pipeline)
    return app.run()


def start_cdc_worker(schema: str, slot: str, log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log_file:
        return subprocess.Popen(
            [sys.executable, __file__, "cdc-worker", json.dumps(connection_settings(DSN)), schema, slot],
            stdout=log_file, stderr=subprocess.STDOUT, cwd=os.path.dirname(__file__))


TRANSACTIONS = 2500


@pytest.mark.timeout(180)
async def test_cdc_sigkilled_five_times_loses_no_change(db: asyncpg.Connection, pg_schema: str, slot_name: str,
                                                         tmp_path: Path) -> None:
    src, log = f'"{pg_schema}".src', f'"{pg_schema}".log'
    await db.execute(f"CREATE TABLE {src} (id int PRIMARY KEY, v int NOT NULL)")
    await db.execute(f"CREATE TABLE {log} (op text, id int, v int, commit_lsn pg_lsn, worker int)")
    # Created before the writer starts, as a deployment does; the worker finds them.
    await db.execute(f"CREATE PUBLICATION {slot_name} FOR TABLE {src}")
    await db.execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", slot_name)
    expected: list[tuple[str, int, int | None]] = []  # (op, id, v) of every change the writer committed
    rng = random.Random(10)

    async def write(transactions: int) -> None:
        writer = await asyncpg.connect(DSN)
        alive: dict[int, int] = {}
        next_id = 0
        try:
            for _ in range(transactions):
                done: list[tuple[str, int, int | None]] = []
                async with writer.transaction():
                    for _ in range(rng.randint(1, 12)):
                        roll = rng.random()
                        if roll < 0.5 or len(alive) < 5:
                            next_id += 1
                            await writer.execute(f"INSERT INTO {src} VALUES ($1, 0)", next_id)
                            alive[next_id] = 0
                            done.append(("insert", next_id, 0))
                        elif roll < 0.85:
                            key = rng.choice(list(alive))
                            alive[key] += 1
                            await writer.execute(f"UPDATE {src} SET v = $2 WHERE id = $1", key, alive[key])
                            done.append(("update", key, alive[key]))
                        else:
                            key = rng.choice(list(alive))
                            await writer.execute(f"DELETE FROM {src} WHERE id = $1", key)
                            alive.pop(key)
                            done.append(("delete", key, None))  # the default replica identity sends the key only
                expected.extend(done)
                await asyncio.sleep(0.001)
        finally:
            await writer.close()

    log_path = tmp_path / "workers.log"
    worker = start_cdc_worker(pg_schema, slot_name, log_path)
    kills: list[tuple[int, set[tuple[str, int, int, int]]]] = []  # confirmed LSN after a kill, the log then
    writing = asyncio.create_task(write(TRANSACTIONS))
    try:
        for _ in range(5):
            # Killed mid-stream: once this worker wrote to the log, at a random moment of its work.
            pid = worker.pid
            deadline = time.monotonic() + 30
            while not await db.fetchval(f"SELECT 1 FROM {log} WHERE worker = $1 LIMIT 1", pid):
                assert worker.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
                await asyncio.sleep(0.02)
            await asyncio.sleep(rng.uniform(0.0, 0.15))
            assert not writing.done(), "the writer finished before the last kill"
            worker.send_signal(signal.SIGKILL)
            await asyncio.to_thread(worker.wait, 10)
            confirmed = await db.fetchval("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1",
                                          slot_name)
            logged = {(r["op"], r["id"], r["v"], r["commit_lsn"]) for r in await db.fetch(f"SELECT * FROM {log}")}
            kills.append((confirmed, logged))
            worker = start_cdc_worker(pg_schema, slot_name, log_path)
        await writing
        total = len(expected)

        async def count() -> int:
            return int(await db.fetchval(f"SELECT count(DISTINCT (op, id, v)) FROM {log}"))

        deadline = time.monotonic() + 60
        while await count() < total:
            assert worker.poll() is None, f"the worker died: {log_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"{total - await count()} changes missing after 60 s"
            await asyncio.sleep(0.2)
        # The last worker may have started after everything was written: a signal must find it running.
        await wait_for(lambda: log_path.read_text().count("'PostgreSQLConnection': ready") >= 6, 30,
                       "the last worker running")
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(worker.wait, 30) == 0
    finally:
        writing.cancel()
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    rows = [(r["op"], r["id"], r["v"], r["commit_lsn"]) for r in await db.fetch(f"SELECT * FROM {log}")]
    delivered = Counter((op, key, v) for op, key, v, _ in rows)
    missing = [c for c in expected if c not in delivered]
    assert not missing, f"{len(missing)} changes lost, e.g. {missing[:5]}"
    assert set(delivered) == set(expected)
    duplicates = sum(delivered.values()) - len(delivered)
    # The slot never passed an unacknowledged change: whatever committed before the confirmed position at a kill
    # was in the log (written by the sink and acknowledged) at that kill.
    commit_of = {(op, key, v): lsn for op, key, v, lsn in rows}
    for confirmed, logged in kills:
        present = {(op, key, v) for op, key, v, _ in logged}
        passed = [c for c, lsn in commit_of.items() if lsn < confirmed and c not in present]
        assert not passed, f"the slot was confirmed at {confirmed} past unacknowledged changes {passed[:5]}"
    print(f"CDC SIGKILLed 5 times: {len(expected)} changes in {TRANSACTIONS} transactions, {sum(delivered.values())} "
          f"delivered, {duplicates} duplicates, 0 missing; confirmed LSNs at the kills: "
          f"{[bspump.postgresql.format_lsn(c) for c, _ in kills]}")


# -- sink ------------------------------------------------------------------------------------------------------


class Numbers(bspump.Source):
    """Emits ``{"id": n, "v": ...}`` for n in range(total), in batches, pausing between them."""

    def __init__(self, *args: Any, total: int, batch: int = 200, pause: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.total, self.batch, self.pause = total, batch, pause

    async def main(self) -> None:
        for start in range(0, self.total, self.batch):
            await self.emit([{"id": n, "v": f"value {n}"} for n in range(start, min(start + self.batch, self.total))])
            await asyncio.sleep(self.pause)


@pytest.mark.server_control
@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["upsert", "insert"])
async def test_sink_survives_a_server_restart(db: asyncpg.Connection, pg_schema: str, server_control: Any,
                                              mode: str) -> None:
    table = f'"{pg_schema}".restart_{mode}'
    unique = "PRIMARY KEY" if mode == "upsert" else ""
    await db.execute(f"CREATE TABLE {table} (id int {unique}, v text)")
    total = 20000
    app = pg_app()
    pipeline = bspump.Pipeline(app, "Restart", config={"retry_backoff": "50ms"})
    sink = bspump.postgresql.PostgreSQLSink(app, pipeline, config={
        "table": f"{pg_schema}.restart_{mode}", "mode": mode, "keys": "id" if mode == "upsert" else ""})
    pipeline.build(Numbers(app, pipeline, total=total, pause=0.01), sink)
    app.pump_service.add_pipeline(pipeline)
    task = asyncio.create_task(app.run_async())
    try:
        await wait_for(lambda: pipeline.metrics()["out"] >= 3000 or task.done(), 30, "3000 rows written")
        await asyncio.to_thread(server_control.restart, "postgresql")
        await wait_for(lambda: task.done(), 90, "every row written after the restart")
    finally:
        app.stop()
        code = await asyncio.wait_for(task, 30)
    assert code == 0
    connection = app.pump_service.connections["PostgreSQLConnection"]
    db = await asyncpg.connect(DSN)  # the fixture's connection did not survive the restart
    try:
        rows, distinct = await db.fetchrow(f"SELECT count(*), count(DISTINCT id) FROM {table}")
    finally:
        await db.close()
    assert distinct == total, f"{total - distinct} rows lost"
    if mode == "upsert":
        assert rows == total
    print(f"sink ({mode}) across a server restart: {total} events, {rows} rows, {rows - distinct} duplicates, "
          f"{connection.connect_count} connects, {sink.write_errors} failed writes retried")


@pytest.mark.parametrize("mode", ["insert", "upsert"])
async def test_bad_rows_are_dead_lettered_with_their_error_and_every_good_row_written(
        db: asyncpg.Connection, pg_schema: str, mode: str) -> None:
    table = f'"{pg_schema}".checked'
    await db.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v int NOT NULL CHECK (v >= 0), name text)")
    bad = {17: {"id": 17, "v": -1, "name": "negative"},  # check constraint
           230: {"id": 230, "v": None, "name": "null"},  # NOT NULL
           555: {"id": 555, "v": "five", "name": "text for an int"},  # refused by asyncpg's encoder
           901: {"id": 901, "v": 1, "name": "x", "nope": 1}}  # no such column
    events = [bad.get(n, {"id": n, "v": n, "name": f"row {n}"}) for n in range(1000)]
    app = pg_app()
    pipeline = bspump.Pipeline(app, "Checked", config={"error_policy": "dead-letter"})
    source = bspump.MemorySource(app, pipeline, events=events, config={"batch_size": 1000})
    sink = bspump.postgresql.PostgreSQLSink(app, pipeline, config={
        "table": f"{pg_schema}.checked", "mode": mode, "keys": "id" if mode == "upsert" else ""})
    letters = bspump.MemorySink(app, pipeline, id="DeadLetter")
    pipeline.build(source, sink, dead_letter=letters)
    app.pump_service.add_pipeline(pipeline)
    assert await asyncio.wait_for(app.run_async(), 60) == 0
    assert sorted(e["id"] for e in letters.events) == sorted(bad)
    errors = {e["id"]: c["error"] for e, c in zip(letters.events, letters.contexts, strict=True)}
    assert "CheckViolationError" in errors[17] and "checked_v_check" in errors[17]
    assert "NotNullViolationError" in errors[230]
    assert "DataError" in errors[555] or "TypeError" in errors[555]  # COPY and prepared statements differ
    assert "UndefinedColumnError" in errors[901] and "nope" in errors[901]
    stored = {r["id"] for r in await db.fetch(f"SELECT id FROM {table}")}
    assert stored == set(range(1000)) - set(bad)
    assert pipeline.metrics()["out"] == 996 and sink.splits > 0
    print(f"bad rows ({mode}): 4 dead-lettered, 996 written, {sink.splits} transactions split")


# -- LISTEN, lookup, query source ------------------------------------------------------------------------------


async def test_notify_source_delivers_text_and_json_and_dead_letters_bad_json(db: asyncpg.Connection) -> None:
    channel = f"it_{uuid.uuid4().hex[:8]}"
    app = pg_app()
    pipeline = bspump.Pipeline(app, "Notify", config={"error_policy": "dead-letter"})
    source = bspump.postgresql.PostgreSQLNotifySource(app, pipeline, config={
        "channels": f"{channel}_a, {channel}_b", "format": "json"})
    sink = bspump.MemorySink(app, pipeline, id="Received")
    letters = bspump.MemorySink(app, pipeline, id="DeadLetter")
    pipeline.build(source, sink, dead_letter=letters)
    app.pump_service.add_pipeline(pipeline)

    async def notify() -> None:
        await asyncio.wait_for(source.listening.wait(), 20)
        await db.execute("SELECT pg_notify($1, $2)", f"{channel}_a", '{"n": 1}')
        await db.execute("SELECT pg_notify($1, $2)", f"{channel}_b", "[2]")
        await db.execute("SELECT pg_notify($1, $2)", f"{channel}_a", "not json")

    notifying = asyncio.create_task(notify())
    await run_until(app, lambda: len(sink.events) >= 2 and len(letters.events) >= 1, 30, "three notifications")
    await notifying
    assert sink.events == [{"n": 1}, [2]]
    assert [c["channel"] for c in sink.contexts] == [f"{channel}_a", f"{channel}_b"]
    assert letters.events == ["not json"] and "is not JSON" in letters.contexts[0]["error"]


@pytest.mark.server_control
@pytest.mark.timeout(90)
async def test_notify_source_listens_again_after_a_server_restart(server_control: Any) -> None:
    channel = f"it_{uuid.uuid4().hex[:8]}"
    app = pg_app()
    pipeline = bspump.Pipeline(app, "Notify")
    source = bspump.postgresql.PostgreSQLNotifySource(app, pipeline, config={"channels": channel})
    sink = bspump.MemorySink(app, pipeline, id="Received")
    pipeline.build(source, sink)
    app.pump_service.add_pipeline(pipeline)

    async def notify(payload: str) -> None:
        connection = await asyncpg.connect(DSN)
        try:
            await connection.execute("SELECT pg_notify($1, $2)", channel, payload)
        finally:
            await connection.close()

    task = asyncio.create_task(app.run_async())
    try:
        await asyncio.wait_for(source.listening.wait(), 20)
        await notify("before")
        await wait_for(lambda: sink.events == ["before"], 20, "the first notification")
        await asyncio.to_thread(server_control.restart, "postgresql")
        await wait_for(lambda: source.listening.is_set() and
                       app.pump_service.connections["PostgreSQLConnection"].connect_count >= 2, 60, "listening again")
        await notify("after")
        await wait_for(lambda: sink.events == ["before", "after"], 20, "the notification after the restart")
    finally:
        app.stop()
        await asyncio.wait_for(task, 30)


@pytest.mark.parametrize("mode", ["whole", "on_demand"])
async def test_lookup_finds_rows_by_key(db: asyncpg.Connection, pg_schema: str, mode: str) -> None:
    await db.execute(f'CREATE TABLE "{pg_schema}".users (id int PRIMARY KEY, name text, secret text)')
    await db.execute(f'INSERT INTO "{pg_schema}".users SELECT g, \'user \' || g, \'s\' FROM generate_series(1, 50) g')
    app = pg_app()
    lookup = bspump.postgresql.PostgreSQLLookup(app, "Users", config={
        "table": f"{pg_schema}.users", "key": "id", "columns": "name", "mode": mode, "ttl": "60s"})
    app.pump_service.add_lookup(lookup)
    await app.pump_service.connections["PostgreSQLConnection"].open()
    try:
        await lookup.start()
        await lookup.prefetch([3, 7, 99])
        assert lookup[3] == {"id": 3, "name": "user 3"}
        assert lookup.get(99) is None and 7 in lookup
        if mode == "on_demand":
            assert lookup.queries == 1 and len(lookup) == 2
            await lookup.prefetch([3, 7])
            assert lookup.queries == 1  # cached
        else:
            assert len(lookup) == 50
    finally:
        await lookup.stop()
        await app.pump_service.connections["PostgreSQLConnection"].close()


async def test_query_source_streams_with_parameters(db: asyncpg.Connection, pg_schema: str) -> None:
    await db.execute(f'CREATE TABLE "{pg_schema}".numbers AS SELECT g AS n FROM generate_series(1, 10000) g')
    app = pg_app()
    pipeline = bspump.Pipeline(app, "Query")
    source = bspump.postgresql.PostgreSQLSource(app, pipeline, config={
        "query": f'SELECT n FROM "{pg_schema}".numbers WHERE n % $1 = 0 ORDER BY n', "params": "[3]",
        "batch_size": 500})
    sink = bspump.MemorySink(app, pipeline, id="Received")
    pipeline.build(source, sink)
    app.pump_service.add_pipeline(pipeline)
    assert await asyncio.wait_for(app.run_async(), 30) == 0  # one run, then the source ends
    assert [e["n"] for e in sink.events] == list(range(3, 10001, 3))


# -- the seed page ---------------------------------------------------------------------------------------------

SEED_SECTION = """\
[connection:PostgreSQLConnection]
host=localhost
port=5432
database=mydb
user=postgres
password=${POSTGRES_PASSWORD}
"""


async def test_seed_page_connection_section_works_as_written(db: asyncpg.Connection, tmp_path: Path) -> None:
    """The seed page's ``[connection:PostgreSQLConnection]`` section and its Python line, verbatim, reach the
    test server (its ``mydb`` created if missing; the password is ignored by its trust authentication)."""
    if not await db.fetchval("SELECT 1 FROM pg_database WHERE datname = 'mydb'"):
        try:
            await db.execute("CREATE DATABASE mydb")
        except asyncpg.DuplicateDatabaseError:
            pass
    conf = write_conf(tmp_path, SEED_SECTION)
    app = make_app(conf, environ={"POSTGRES_PASSWORD": "not-needed-by-trust"})
    namespace = {"app": app, "bspump": bspump}
    exec('import bspump.postgresql\n'
         'connection = bspump.postgresql.PostgreSQLConnection(app, "PostgreSQLConnection")\n', namespace)
    connection = namespace["connection"]
    assert isinstance(connection, bspump.postgresql.PostgreSQLConnection)
    assert "not-needed-by-trust" not in repr(connection.Config)
    await connection.open()
    try:
        await connection.wait_ready(20)
        async with connection.session() as session:
            assert await session.fetchval("SELECT current_database()") == "mydb"
    finally:
        await connection.close()


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "cdc-worker":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(message)s")
    sys.exit(run_cdc_worker(*sys.argv[2:5]))
