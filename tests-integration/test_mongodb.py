"""bspump-mongodb against the real wire servers: the issue's acceptance points beyond the conformance kit.

- a change-stream pump SIGKILLed and restarted five times loses nothing (duplicates are counted and printed);
- an invalidate (collection dropped) followed by a recreated collection keeps streaming;
- an expired resume token: ``fail`` stops with the lost window, ``restart`` ends with every document (on a
  SecantusDB of the test's own whose oplog keeps 30 entries);
- a batch with duplicates and invalid documents: those dead-lettered with the server's reason, the rest written;
- the server restarted mid-run: the pipeline reconnects and nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from mongodb_support import (
    change_stream_support,
    mongo_client,
    operation_time,
    private_secantusdb,
    secantusd,
    validator_support,
)

import bspump
import bspump.mongodb
from bspump.embedded.memory import MemorySink
from bspump.testing import make_app, run_until, wait_for

pytestmark = [pytest.mark.mongodb]

FAST = {"reconnect_initial": 0.1, "reconnect_max": 1.0, "reconnect_jitter": 0.0, "server_selection_timeout": "2s"}


class Numbered(bspump.Processor):
    """A change event -> ``{"n": ..., "op": ...}``: the sink inserts one record per event delivered, so that
    duplicates are visible in the target."""

    def process(self, context: bspump.Context, event: Any) -> Any:
        return {"n": event["fullDocument"]["n"], "op": event["operationType"]}


def pump_app(uri: str, database: str, source: dict[str, Any], sink: dict[str, Any] | None,
             processor: bool = False, pipeline_config: dict[str, Any] | None = None,
             state_dir: Path | None = None) -> tuple[bspump.BSPumpApplication, bspump.Pipeline]:
    """Change stream of ``source["collection"]`` -> MongoDBSink (or a MemorySink when ``sink`` is None)."""
    app = make_app(environ={"BSPUMP_STATE_DIR": str(state_dir)} if state_dir else None)
    svc = app.pump_service
    svc.add_connection(bspump.mongodb.MongoDBConnection(app, "MongoDBConnection",
                                                        config={"uri": uri, "database": database, **FAST}))
    pipeline = bspump.Pipeline(app, "ChangePump", config={"retry_backoff": "50ms", **(pipeline_config or {})})
    stream = bspump.mongodb.MongoDBChangeStreamSource(app, pipeline, config={
        "commit_interval": "100ms", "max_await": "50ms", "batch_size": 100, **source})
    components: list[Any] = [stream]
    if processor:
        components.append(Numbered(app, pipeline))
    if sink is None:
        components.append(MemorySink(app, pipeline, id="Received"))
    else:
        components.append(bspump.mongodb.MongoDBSink(app, pipeline, config=sink))
    pipeline.build(*components)
    svc.add_pipeline(pipeline)
    return app, pipeline


async def numbers(uri: str, database: str, collection: str, field: str = "n") -> list[int]:
    async with mongo_client(uri) as client:
        return [doc[field] async for doc in client[database][collection].find({}, {field: 1})]


async def insert_range(uri: str, database: str, collection: str, start: int, stop: int) -> None:
    async with mongo_client(uri) as client:
        await client[database][collection].insert_many([{"n": n} for n in range(start, stop)])


@pytest_asyncio.fixture
async def change_stream_uri(mongodb_cs_uri: str) -> str:
    missing = await change_stream_support(mongodb_cs_uri)
    if missing is not None:
        pytest.skip(f"mongodb_cs_uri: {missing}")
    return mongodb_cs_uri


# -- SIGKILL ---------------------------------------------------------------------------------------------------


def run_pump(uri: str, database: str, collection: str, target: str, start_at: str) -> int:
    """The pump of the SIGKILL test, in a process of its own (``python test_mongodb.py pump ...``)."""
    app, _ = pump_app(uri, database, {"collection": collection, "start_at": start_at},
                      {"collection": target}, processor=True)
    return app.run()


@pytest.mark.timeout(120)
async def test_change_stream_pump_sigkilled_five_times_loses_nothing(
        change_stream_uri: str, mongo_db_name: str, tmp_path: Path) -> None:
    """Documents keep being inserted while the pump (change stream -> one record per event in another
    collection) is SIGKILLed five times, each time once it wrote at least 150 more records plus a random moment.
    After a last, graceful run every inserted document has its record; duplicates are counted."""
    start_at = str(await operation_time(change_stream_uri, mongo_db_name))
    command = [sys.executable, __file__, "pump", change_stream_uri, mongo_db_name, "source", "target", start_at]

    def start(run: int) -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"pump{run}.log", "wb")
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=os.path.dirname(__file__))

    written = 0
    kills_done = asyncio.Event()

    async def write_source() -> None:
        nonlocal written
        while not kills_done.is_set():
            await insert_range(change_stream_uri, mongo_db_name, "source", written, written + 50)
            written += 50
            await asyncio.sleep(0.03)

    writer = asyncio.create_task(write_source())
    rng = random.Random(11)
    kills = []
    try:
        for run in range(5):
            pump = start(run)
            written_before = len(await numbers(change_stream_uri, mongo_db_name, "target"))
            deadline = time.monotonic() + 30
            while len(await numbers(change_stream_uri, mongo_db_name, "target")) < written_before + 150:
                assert pump.poll() is None, (tmp_path / f"pump{run}.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "the pump wrote nothing new"
                await asyncio.sleep(0.05)
            await asyncio.sleep(rng.uniform(0.05, 0.4))  # mid-batch, mid-commit: wherever it is
            pump.send_signal(signal.SIGKILL)
            pump.wait(10)
            kills.append(len(await numbers(change_stream_uri, mongo_db_name, "target")))
        kills_done.set()
        await writer
        total = written
        pump = start(5)
        deadline = time.monotonic() + 60
        while len(set(await numbers(change_stream_uri, mongo_db_name, "target"))) < total:
            assert pump.poll() is None, (tmp_path / "pump5.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "not every event arrived after the last restart"
            await asyncio.sleep(0.1)
        pump.send_signal(signal.SIGTERM)
        assert pump.wait(30) == 0
    finally:
        writer.cancel()
    seen = await numbers(change_stream_uri, mongo_db_name, "target")
    duplicates = len(seen) - len(set(seen))
    print(f"change stream, 5 SIGKILLs (records at each kill: {kills}): {total} documents inserted, "
          f"{len(set(seen))} delivered, {duplicates} duplicates")
    assert set(seen) == set(range(total))


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "pump":
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(message)s")
    logging.getLogger("bspump.source").setLevel(logging.DEBUG)
    sys.exit(run_pump(*sys.argv[2:7]))


# -- invalidate ------------------------------------------------------------------------------------------------


async def test_invalidate_then_recreated_collection_keeps_streaming(
        change_stream_uri: str, mongo_db_name: str) -> None:
    app, pipeline = pump_app(change_stream_uri, mongo_db_name, {"collection": "watched"}, None)
    source = pipeline.sources[0]
    received = pipeline.sink
    assert isinstance(source, bspump.mongodb.MongoDBChangeStreamSource) and isinstance(received, MemorySink)

    def inserted() -> list[int]:
        return [e["fullDocument"]["n"] for e in received.events if e["operationType"] == "insert"]

    async def scenario() -> None:
        await wait_for(lambda: source.position is not None or pipeline.ready, 10)
        await asyncio.sleep(0.3)  # the stream is open
        await insert_range(change_stream_uri, mongo_db_name, "watched", 0, 10)
        await wait_for(lambda: len(inserted()) == 10, 10, "the first ten")
        async with mongo_client(change_stream_uri) as client:
            await client[mongo_db_name]["watched"].drop()
        await wait_for(lambda: source.invalidations == 1, 10, "the invalidate")
        await insert_range(change_stream_uri, mongo_db_name, "watched", 10, 20)  # recreates the collection

    task = asyncio.create_task(scenario())
    await run_until(app, lambda: len(inserted()) >= 20, 30, "the events of the recreated collection")
    await task
    assert inserted() == list(range(20))
    assert [e["operationType"] for e in received.events if e["operationType"] != "insert"] == ["drop"]
    assert source.invalidations == 1


# -- expired resume token --------------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def short_oplog_uri(tmp_path: Path) -> AsyncIterator[str]:
    """A SecantusDB of this test's own whose oplog keeps 30 entries (``--oplog-max-entries``); its
    ``secantusAdmin.pruneOplog`` drops older ones at once. Real MongoDB cannot shrink its oplog below 990 MB,
    so where the harness's SecantusDB is not installed (the GitHub workflow) the test is skipped."""
    if secantusd() is None:
        pytest.skip("needs the harness's SecantusDB (run.sh install secantusdb): a real MongoDB oplog cannot be "
                    "made small enough to lose history in a test")
    async with private_secantusdb(tmp_path, "--oplog-max-entries", "30") as port:
        yield f"mongodb://127.0.0.1:{port}/?directConnection=true"


@pytest.mark.timeout(120)
async def test_expired_resume_token_fail_then_restart(short_oplog_uri: str, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    uri, database = short_oplog_uri, "shop"
    replicate = {"collection": "replica", "events": "change_events"}

    def app_with(policy: str) -> tuple[bspump.BSPumpApplication, bspump.Pipeline]:
        return pump_app(uri, database, {"collection": "orders", "on_history_lost": policy}, replicate)

    # First run: streams 0..9 and checkpoints (in the deployment's bspump_checkpoints collection).
    app, pipeline = app_with("fail")
    source = pipeline.sources[0]

    async def first_events() -> None:
        await asyncio.sleep(0.5)
        await insert_range(uri, database, "orders", 0, 10)

    feeding = asyncio.create_task(first_events())
    await run_until(app, lambda: pipeline.metrics()["out"] >= 10 and source.commits > 0, 30, "ten replicated")
    await feeding
    assert sorted(await numbers(uri, database, "replica")) == list(range(10))
    # While the pump is down: more changes than the oplog keeps, and a prune.
    await insert_range(uri, database, "orders", 10, 200)
    async with mongo_client(uri) as client:
        await client.admin.command("secantusAdmin.pruneOplog")
        oldest = await client.local["oplog.rs"].find_one({}, sort=[("$natural", 1)])
    assert oldest is not None

    # fail: the application stops (exit code 1) with the window; nothing of 10..199 was made up.
    app, pipeline = app_with("fail")
    code = await asyncio.wait_for(app.run_async(), 30)
    assert code == 1
    error = pipeline.error
    assert isinstance(error, bspump.mongodb.ChangeStreamHistoryLostError), error
    assert "are lost" in str(error) and "from 20" in str(error) and "286" in str(error), str(error)
    assert sorted(await numbers(uri, database, "replica")) == list(range(10))

    # restart: loud log, snapshot, then streaming on; every document ends up present.
    app, pipeline = app_with("restart")
    source = pipeline.sources[0]
    assert isinstance(source, bspump.mongodb.MongoDBChangeStreamSource)

    async def after_snapshot() -> None:
        await wait_for(lambda: source.snapshots == 1 and source.tracker.pending() == 0, 30, "the snapshot")
        await insert_range(uri, database, "orders", 200, 210)

    feeding = asyncio.create_task(after_snapshot())

    async def replicated() -> list[int]:
        return sorted(await numbers(uri, database, "replica"))

    done: list[int] = []

    async def poll() -> None:
        while True:
            done[:] = await replicated()
            await asyncio.sleep(0.1)

    poller = asyncio.create_task(poll())
    try:
        code = await run_until(app, lambda: done == list(range(210)), 45, "every document replicated")
    finally:
        poller.cancel()
    await feeding
    assert code == 0
    assert source.history_lost == 1 and source.snapshots == 1
    assert any("CHANGE STREAM HISTORY LOST" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
    print(f"expired token: fail -> {error}")


# -- per-item failures -----------------------------------------------------------------------------------------


class OneBatch(bspump.Source):
    """Emits ``events`` as one batch, then is exhausted."""

    def __init__(self, *args: Any, events: list[Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events = events

    async def main(self) -> None:
        await self.emit([dict(e) for e in self.events], {"source": "test"})


async def test_batch_with_duplicates_and_invalid_documents_ferretdb(mongodb_uri: str, mongo_db_name: str) -> None:
    await batch_with_duplicates_and_invalid_documents(mongodb_uri, mongo_db_name)


async def test_batch_with_duplicates_and_invalid_documents_secantusdb(mongodb_cs_uri: str,
                                                                      mongo_db_name: str) -> None:
    await batch_with_duplicates_and_invalid_documents(mongodb_cs_uri, mongo_db_name)


async def batch_with_duplicates_and_invalid_documents(uri: str, database: str) -> None:
    """Replayed, conflicting, invalid and unencodable documents in one batch: the replay counts as written,
    the others are dead-lettered with the server's (or the encoder's) reason, every other document is written."""
    validators = await validator_support(uri)
    async with mongo_client(uri) as client:
        if validators:
            await client[database].create_collection("items", validator={"n": {"$gte": 0}})
        await client[database]["items"].create_index("sku", unique=True)
        await client[database]["items"].insert_many([{"_id": 1, "n": 1, "sku": "a1"}, {"_id": 2, "n": 2, "sku": "a2"}])

    good = [{"_id": 100 + n, "n": 100 + n, "sku": f"s{n}"} for n in range(20)]
    replay = {"_id": 1, "n": 1, "sku": "a1"}  # already stored exactly so: an idempotent re-insert
    conflict_id = {"_id": 2, "n": 999, "sku": "other"}  # another document under a taken _id
    conflict_sku = {"_id": 300, "n": 300, "sku": "s3"}  # a taken unique sku
    invalid = {"_id": 301, "n": -1, "sku": "v"} if validators else {"_id": 301, "n": 301, "$sku": "v"}
    unencodable = {"_id": 302, "n": 302, "sku": {1, 2}}  # a Python set: no BSON for it
    batch = [*good[:5], replay, conflict_id, *good[5:10], conflict_sku, invalid, unencodable, *good[10:]]

    app = make_app()
    app.pump_service.add_connection(bspump.mongodb.MongoDBConnection(
        app, "MongoDBConnection", config={"uri": uri, "database": database, **FAST}))
    pipeline = bspump.Pipeline(app, "Items", config={"error_policy": "dead-letter"})
    letters = MemorySink(app, pipeline, id="DeadLetter")
    sink = bspump.mongodb.MongoDBSink(app, pipeline, config={"collection": "items"})
    pipeline.build(OneBatch(app, pipeline, events=batch), sink, dead_letter=letters)
    app.pump_service.add_pipeline(pipeline)
    assert await asyncio.wait_for(app.run_async(), 30) == 0
    errors = {event["_id"]: context["error"] for event, context in zip(letters.events, letters.contexts, strict=True)}
    assert set(errors) == {2, 300, 301, 302}, errors
    assert "E11000" in errors[2] and "E11000" in errors[300]
    assert ("validation" in errors[301].lower()) if validators else ("$sku" in errors[301]), errors[301]
    assert "set" in errors[302].lower() or "encode" in errors[302].lower(), errors[302]
    stored = await numbers(uri, database, "items")
    assert sorted(stored) == sorted([1, 2, *(e["n"] for e in good)])
    assert sink.duplicates == 1
    assert pipeline.metrics()["out"] == len(good) + 1
    print(f"{uri}: dead-lettered {errors}")

    # The same batch again, now with a MongoDBSink as the dead-letter sink: the letters are stored.
    app = make_app()
    app.pump_service.add_connection(bspump.mongodb.MongoDBConnection(
        app, "MongoDBConnection", config={"uri": uri, "database": database, **FAST}))
    pipeline = bspump.Pipeline(app, "Items", config={"error_policy": "dead-letter"})
    pipeline.build(OneBatch(app, pipeline, events=batch),
                   bspump.mongodb.MongoDBSink(app, pipeline, config={"collection": "items"}),
                   dead_letter=bspump.mongodb.MongoDBSink(app, pipeline, id="DeadLetters",
                                                          config={"collection": "dead_letters"}))
    app.pump_service.add_pipeline(pipeline)
    assert await asyncio.wait_for(app.run_async(), 30) == 0
    async with mongo_client(uri) as client:
        letters = [d async for d in client[database]["dead_letters"].find({})]
    by_id = {letter["event"].get("_id"): letter for letter in letters}
    # The unencodable event is kept as its type only; so is, on FerretDB, the one with a '$' field.
    assert set(by_id) == ({2, 300, 301, None} if validators else {2, 300, None}), by_id
    assert {"unencodable": "dict"} in [letter["event"] for letter in letters]
    assert len(letters) == 4
    assert "E11000" in by_id[300]["error"] and by_id[300]["error_pipeline"] == "Items"


# -- the server restarted mid-run ---------------------------------------------------------------------------------


@pytest.mark.server_control
@pytest.mark.timeout(120)
async def test_server_restart_mid_stream_loses_nothing(change_stream_uri: str, mongo_db_name: str,
                                                       server_control: Any) -> None:
    """Change stream -> sink on the same server, restarted while events flow: both reconnect; every event is
    replicated."""
    total = 3000
    start_at = str(await operation_time(change_stream_uri, mongo_db_name))
    app, pipeline = pump_app(change_stream_uri, mongo_db_name, {"collection": "source", "start_at": start_at},
                             {"collection": "target"}, processor=True)
    connection = app.pump_service.connections["MongoDBConnection"]

    restarted = asyncio.Event()

    async def write_source() -> None:
        for first in range(0, total, 100):
            if first == total // 2:
                # The second half only once the server is back: it reaches the target only through the
                # reconnected pipeline (otherwise everything could be replicated before the outage).
                await restarted.wait()
            while True:
                try:
                    await insert_range(change_stream_uri, mongo_db_name, "source", first, first + 100)
                    break
                except Exception:  # the server is restarting
                    await asyncio.sleep(0.2)
            await asyncio.sleep(0.02)

    async def restart_midway() -> None:
        await wait_for(lambda: pipeline.metrics()["out"] >= 500, 30, "500 events replicated")
        await asyncio.to_thread(server_control.stop, "secantusdb")
        # Down until the pipeline noticed (longer than the driver's own retry): the reconnect path runs.
        await wait_for(lambda: connection.failure_count >= 1, 30, "the link failure reported")
        await asyncio.to_thread(server_control.start, "secantusdb")
        restarted.set()

    writer = asyncio.create_task(write_source())
    restarter = asyncio.create_task(restart_midway())
    seen: set[int] = set()

    async def poll() -> None:
        while True:
            try:
                seen.update(await numbers(change_stream_uri, mongo_db_name, "target"))
            except Exception:
                pass
            await asyncio.sleep(0.2)

    poller = asyncio.create_task(poll())
    try:
        await run_until(app, lambda: restarter.done() and len(seen) >= total, 90, "every event after the restart")
    finally:
        poller.cancel()
    await restarter
    await writer
    assert connection.failure_count >= 1 and connection.connect_count >= 2
    assert seen == set(range(total))
    stored = await numbers(change_stream_uri, mongo_db_name, "target")
    print(f"secantusdb restarted mid-stream: {total} events, {len(stored) - len(set(stored))} duplicates, "
          f"{connection.failure_count} reconnects")


@pytest.mark.server_control
@pytest.mark.timeout(120)
async def test_sink_survives_ferretdb_restart(mongodb_uri: str, mongo_db_name: str, server_control: Any) -> None:
    """A sink writing while FerretDB restarts: it reconnects, and every acknowledged event is stored."""
    app = make_app()
    app.pump_service.add_connection(bspump.mongodb.MongoDBConnection(
        app, "MongoDBConnection", config={"uri": mongodb_uri, "database": mongo_db_name, **FAST}))
    pipeline = bspump.Pipeline(app, "Writer", config={"retry_backoff": "50ms"})

    class Numbers(bspump.Source):
        emitted = 0

        async def main(self) -> None:
            while True:
                await self.emit([{"_id": n, "n": n} for n in range(self.emitted, self.emitted + 100)])
                self.emitted += 100
                await asyncio.sleep(0.01)

    source = Numbers(app, pipeline)
    sink = bspump.mongodb.MongoDBSink(app, pipeline, config={"collection": "items"})
    pipeline.build(source, sink)
    app.pump_service.add_pipeline(pipeline)
    restarted: list[float] = []

    async def restart() -> None:
        await wait_for(lambda: pipeline.metrics()["out"] >= 1000, 30, "1000 written")
        await asyncio.to_thread(server_control.stop, "ferretdb")
        connection = app.pump_service.connections["MongoDBConnection"]
        await wait_for(lambda: connection.failure_count >= 1, 30, "the link failure reported")
        await asyncio.to_thread(server_control.start, "ferretdb")
        restarted.append(pipeline.metrics()["out"])

    task = asyncio.create_task(restart())
    await run_until(app, lambda: bool(restarted) and pipeline.metrics()["out"] >= restarted[0] + 1000, 90,
                    "1000 more written after the restart")
    await task
    stored = await numbers(mongodb_uri, mongo_db_name, "items")
    assert sorted(stored) == list(range(source.emitted)), "an emitted event is missing"
    assert pipeline.metrics()["out"] == source.emitted
    connection = app.pump_service.connections["MongoDBConnection"]
    assert connection.failure_count >= 1


# -- replication through change events, document modes --------------------------------------------------------


async def test_change_events_replicate_inserts_updates_and_deletes(change_stream_uri: str,
                                                                   mongo_db_name: str) -> None:
    """Change stream -> MongoDBSink(events = change_events): the replica ends equal to the source, through
    inserts, $set/$unset updates (deltas only: full_document default), replacements and deletes."""
    app, pipeline = pump_app(change_stream_uri, mongo_db_name, {"collection": "orders"},
                             {"collection": "replica", "events": "change_events"})
    sink = pipeline.sink

    async def changes() -> None:
        await asyncio.sleep(0.4)
        async with mongo_client(change_stream_uri) as client:
            orders = client[mongo_db_name]["orders"]
            await orders.insert_many([{"_id": n, "n": n, "state": "new", "note": "x"} for n in range(20)])
            await orders.update_many({"n": {"$lt": 10}}, {"$set": {"state": "paid"}, "$unset": {"note": ""}})
            await orders.replace_one({"_id": 15}, {"n": 15, "state": "replaced"})
            await orders.delete_many({"n": {"$gte": 17}})

    async def same() -> bool:
        async with mongo_client(change_stream_uri) as client:
            source = [d async for d in client[mongo_db_name]["orders"].find({}, sort=[("_id", 1)])]
            replica = [d async for d in client[mongo_db_name]["replica"].find({}, sort=[("_id", 1)])]
        return source == replica and len(source) == 17

    task = asyncio.create_task(changes())
    equal: list[bool] = [False]

    async def poll() -> None:
        while True:
            equal[0] = await same()
            await asyncio.sleep(0.1)

    poller = asyncio.create_task(poll())
    try:
        await run_until(app, lambda: task.done() and equal[0] and pipeline.metrics()["out"] >= 34, 30,
                        "the replica equal to the source")
    finally:
        poller.cancel()
    assert await same()
    assert isinstance(sink, bspump.mongodb.MongoDBSink) and sink.unmatched == 0


async def test_full_document_modes_and_images(change_stream_uri: str, mongo_db_name: str) -> None:
    """updateLookup gives updates their document; with changeStreamPreAndPostImages, required pre- and
    post-images arrive."""
    async with mongo_client(change_stream_uri) as client:
        await client[mongo_db_name].create_collection("items", changeStreamPreAndPostImages={"enabled": True})
    app, pipeline = pump_app(change_stream_uri, mongo_db_name, {
        "collection": "items", "full_document": "required", "full_document_before_change": "required"}, None)
    received = pipeline.sink
    assert isinstance(received, MemorySink)

    async def changes() -> None:
        await asyncio.sleep(0.4)
        async with mongo_client(change_stream_uri) as client:
            await client[mongo_db_name]["items"].insert_one({"_id": 1, "v": 1})
            await client[mongo_db_name]["items"].update_one({"_id": 1}, {"$set": {"v": 2}})

    task = asyncio.create_task(changes())
    await run_until(app, lambda: len(received.events) >= 2, 20, "insert and update")
    await task
    update = received.events[1]
    assert update["operationType"] == "update"
    assert update["fullDocument"] == {"_id": 1, "v": 2}
    assert update["fullDocumentBeforeChange"] == {"_id": 1, "v": 1}


async def test_query_source_filter_projection_and_incremental_poll(mongodb_uri: str, mongo_db_name: str) -> None:
    """Only what ``filter`` matches, only the projected fields, in ``_id`` order; with ``interval`` the next
    poll reads the documents inserted since."""
    await insert_range(mongodb_uri, mongo_db_name, "events", 0, 30)
    app = make_app()
    app.pump_service.add_connection(bspump.mongodb.MongoDBConnection(
        app, "MongoDBConnection", config={"uri": mongodb_uri, "database": mongo_db_name, **FAST}))
    pipeline = bspump.Pipeline(app, "Query")
    source = bspump.mongodb.MongoDBSource(app, pipeline, config={
        "collection": "events", "filter": '{"n": {"$mod": [2, 0]}}', "projection": '{"n": 1, "_id": 0}',
        "batch_size": 4, "interval": "100ms", "commit_interval": "50ms"})
    received = MemorySink(app, pipeline, id="Received")
    pipeline.build(source, received)
    app.pump_service.add_pipeline(pipeline)

    async def more() -> None:
        await wait_for(lambda: len(received.events) >= 15, 10, "the first poll")
        await insert_range(mongodb_uri, mongo_db_name, "events", 30, 40)

    task = asyncio.create_task(more())
    await run_until(app, lambda: len(received.events) >= 20, 20, "the second poll")
    await task
    assert [e["n"] for e in received.events] == list(range(0, 40, 2))
    assert all(set(e) == {"n", "_id"} for e in received.events)  # _id is added back: the resume field


async def test_lookup_whole_and_on_demand(mongodb_uri: str, mongo_db_name: str) -> None:
    async with mongo_client(mongodb_uri) as client:
        await client[mongo_db_name]["users"].insert_many(
            [{"_id": n, "login": f"u{n}", "name": f"User {n}", "active": n % 2 == 0} for n in range(10)])
    app = make_app()
    app.pump_service.add_connection(bspump.mongodb.MongoDBConnection(
        app, "MongoDBConnection", config={"uri": mongodb_uri, "database": mongo_db_name, **FAST}))
    whole = bspump.mongodb.MongoDBLookup(app, "Active", config={
        "collection": "users", "key": "login", "value": "name", "filter": '{"active": true}'})
    on_demand = bspump.mongodb.MongoDBLookup(app, "Users", config={
        "collection": "users", "mode": "on_demand", "ttl": "1m", "projection": '{"name": 1}'})
    for lookup in (whole, on_demand):
        app.pump_service.add_lookup(lookup)
    connection = app.pump_service.connections["MongoDBConnection"]
    await connection.open()
    try:
        await whole.start()
        await on_demand.start()
        assert dict(whole) == {f"u{n}": f"User {n}" for n in range(0, 10, 2)}
        await on_demand.prefetch([1, 2, 99])
        assert on_demand.get(1) == {"_id": 1, "name": "User 1"} and on_demand.get(99) is None
        assert on_demand.queries == 1
        await on_demand.prefetch([1, 2])
        assert on_demand.queries == 1  # cached
    finally:
        await connection.close()


async def test_initial_snapshot_then_stream_from_a_token_taken_before_it(change_stream_uri: str,
                                                                          mongo_db_name: str) -> None:
    """Documents already there arrive as ``snapshot`` events; documents inserted while the snapshot is being
    read arrive through the stream (the token was taken before the snapshot started); a second run resumes
    from the checkpoint without a new snapshot."""
    await insert_range(change_stream_uri, mongo_db_name, "items", 0, 300)
    source_config = {"collection": "items", "initial_snapshot": True, "snapshot_batch_size": 10}
    app, pipeline = pump_app(change_stream_uri, mongo_db_name, source_config, None,
                             pipeline_config={"max_in_flight": 20})
    source = pipeline.sources[0]
    received = pipeline.sink
    assert isinstance(source, bspump.mongodb.MongoDBChangeStreamSource) and isinstance(received, MemorySink)

    def numbers_of(kind: str) -> list[int]:
        return [e["fullDocument"]["n"] for e in received.events if e["operationType"] == kind]

    async def during_snapshot() -> None:
        await wait_for(lambda: len(received.events) >= 10, 10, "the first snapshot batch")
        await insert_range(change_stream_uri, mongo_db_name, "items", 300, 350)

    task = asyncio.create_task(during_snapshot())
    await run_until(app, lambda: set(range(300, 350)) <= set(numbers_of("insert")), 30,
                    "the inserts made during the snapshot")
    await task
    snapshot = numbers_of("snapshot")
    assert set(range(300)) <= set(snapshot), "a document that was there is missing from the snapshot"
    assert source.snapshots == 1
    assert snapshot == sorted(snapshot)  # read in _id order
    # The second run starts from the checkpoint: no snapshot, nothing old again.
    app, pipeline = pump_app(change_stream_uri, mongo_db_name, source_config, None)
    again = pipeline.sources[0]
    received = pipeline.sink
    assert isinstance(again, bspump.mongodb.MongoDBChangeStreamSource) and isinstance(received, MemorySink)

    async def one_more() -> None:
        await asyncio.sleep(0.5)
        await insert_range(change_stream_uri, mongo_db_name, "items", 350, 351)

    task = asyncio.create_task(one_more())
    await run_until(app, lambda: bool(received.events), 20, "the next insert")
    await task
    assert again.snapshots == 0
    assert [e["fullDocument"]["n"] for e in received.events] == [350]


async def test_database_watch_leaves_out_its_own_checkpoints(change_stream_uri: str, mongo_db_name: str) -> None:
    """A database watch sees every collection of the database, but not the checkpoint collection that the
    source itself writes to in that same database (no feedback loop)."""
    app, pipeline = pump_app(change_stream_uri, mongo_db_name, {"watch": "database", "commit_interval": "20ms"},
                             None)
    source = pipeline.sources[0]
    received = pipeline.sink
    assert isinstance(source, bspump.mongodb.MongoDBChangeStreamSource) and isinstance(received, MemorySink)

    async def changes() -> None:
        await asyncio.sleep(0.4)
        for n in range(5):
            await insert_range(change_stream_uri, mongo_db_name, "a", n, n + 1)
            await insert_range(change_stream_uri, mongo_db_name, "b", n, n + 1)
            await asyncio.sleep(0.05)  # several commits in between

    task = asyncio.create_task(changes())
    await run_until(app, lambda: task.done() and len(received.events) >= 10 and source.commits >= 3, 20,
                    "ten events and some commits")
    await asyncio.sleep(0)
    namespaces = sorted({e["ns"]["coll"] for e in received.events})
    assert namespaces == ["a", "b"], namespaces
    assert len(received.events) == 10


# -- TLS with a client certificate, and authentication --------------------------------------------------------


def make_certificates(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate (PEM with its key), by openssl."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=bspump test CA",
        "-keyout", "ca.key", "-out", "ca.pem")
    for name, extension in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=bspump {name}", "-keyout", f"{name}.key",
            "-out", f"{name}.csr")
        (folder / f"{name}.ext").write_text(extension + "\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem")
    (folder / "client-bundle.pem").write_text((folder / "client.pem").read_text() + (folder / "client.key").read_text())
    return {"ca": folder / "ca.pem", "server": folder / "server.pem", "server_key": folder / "server.key",
            "client": folder / "client-bundle.pem"}


@pytest.mark.timeout(90)
async def test_tls_with_client_certificate_and_scram_authentication(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """Against a SecantusDB of the test's own that requires TLS with a client certificate and SCRAM-SHA-256:
    the connection's TLS and auth keys reach it (a sink writes, a query source reads back); a wrong password
    keeps the connection from becoming ready and is never logged."""
    if secantusd() is None or shutil.which("openssl") is None:
        pytest.skip("needs the harness's SecantusDB and openssl to run a TLS server of the test's own")
    certs = make_certificates(tmp_path)
    tls = ["--tls-cert-file", str(certs["server"]), "--tls-key-file", str(certs["server_key"]),
           "--tls-ca-file", str(certs["ca"])]
    client_tls = {"tls": True, "tlsCAFile": str(certs["ca"]), "tlsCertificateKeyFile": str(certs["client"])}
    password = "Pump-pa55word-9f2c"
    async with private_secantusdb(tmp_path, *tls, **client_tls) as port:  # first start: create the user
        async with mongo_client(f"mongodb://127.0.0.1:{port}/?directConnection=true", **client_tls) as client:
            await client.admin.command("createUser", "pump", pwd=password, roles=["root"])
    async with private_secantusdb(tmp_path, *tls, "--tls-require-client-cert", "--auth", port=port,
                                  username="pump", password=password, **client_tls):
        connection = {"host": "127.0.0.1", "port": port, "direct_connection": "true", "database": "shop",
                      "tls_ca_file": str(certs["ca"]), "tls_certificate_key_file": str(certs["client"]),
                      "username": "pump", "password": password, "auth_source": "admin",
                      "auth_mechanism": "SCRAM-SHA-256", **FAST}
        app = make_app()
        app.pump_service.add_connection(bspump.mongodb.MongoDBConnection(app, "MongoDBConnection", config=connection))
        pipeline = bspump.Pipeline(app, "Write")
        pipeline.build(OneBatch(app, pipeline, events=[{"_id": n, "n": n} for n in range(10)]),
                       bspump.mongodb.MongoDBSink(app, pipeline, config={"collection": "items"}))
        app.pump_service.add_pipeline(pipeline)
        assert await asyncio.wait_for(app.run_async(), 30) == 0
        assert pipeline.metrics()["out"] == 10

        app = make_app()
        app.pump_service.add_connection(bspump.mongodb.MongoDBConnection(app, "MongoDBConnection", config=connection))
        pipeline = bspump.Pipeline(app, "Read")
        received = MemorySink(app, pipeline, id="Received")
        pipeline.build(bspump.mongodb.MongoDBSource(app, pipeline, config={"collection": "items",
                                                                           "checkpoint_store": "file"}), received)
        app.pump_service.add_pipeline(pipeline)
        assert await asyncio.wait_for(app.run_async(), 30) == 0
        assert [e["n"] for e in received.events] == list(range(10))

        wrong = "Wrong-pa55word-7d1e"
        app = make_app()
        conn = bspump.mongodb.MongoDBConnection(app, "MongoDBConnection", config={**connection, "password": wrong})
        app.pump_service.add_connection(conn)
        with caplog.at_level(logging.DEBUG):
            await conn.open()
            await wait_for(lambda: conn.last_error is not None, 20, "a refused login")
            await conn.close()
        assert conn.connect_count == 0
        assert "Authentication failed" in str(conn.last_error) or "auth" in str(conn.last_error).lower()
        assert not [r for r in caplog.records if wrong in r.getMessage()]

        # Without the client certificate the server refuses the TLS handshake.
        app = make_app()
        anonymous = {k: v for k, v in connection.items() if k != "tls_certificate_key_file"}
        conn = bspump.mongodb.MongoDBConnection(app, "MongoDBConnection", config=anonymous)
        app.pump_service.add_connection(conn)
        await conn.open()
        await wait_for(lambda: conn.last_error is not None, 20, "a refused handshake")
        await conn.close()
        assert conn.connect_count == 0
