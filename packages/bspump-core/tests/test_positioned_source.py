"""PositionedSource (commit interval, at drain, on revocation, never past a gap, newest kept on a failed commit)
and the checkpoint store that keeps positions for systems that cannot."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import make_app, run_app, wait_for

import bspump
from bspump.checkpoint import CheckpointError, FileCheckpointStore


class Partitions(bspump.PositionedSource[str]):
    """Reads ``batches`` of (partition, events); positions count events per partition. Records its commits;
    ``commit_errors`` are raised by the next commits, one each."""

    def __init__(self, *args: Any, batches: Sequence[tuple[str, list[Any]]] = (),
                 commit_errors: Sequence[BaseException] = (), record: bool = True, linger: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches = list(batches)
        self.linger = linger
        self.commit_errors = list(commit_errors)
        self.record = record
        self.committed: list[dict[str, Any]] = []
        self.start_positions: dict[str, Any] = {}

    async def main(self) -> None:
        self.start_positions = await self.load_positions()
        counts = {p: int(v) for p, v in self.start_positions.items()}
        for partition, events in self.batches:
            counts[partition] = counts.get(partition, 0) + len(events)
            delivery = self.track({partition: counts[partition]})
            await self.emit(events, {"partition": partition}, delivery=delivery)
            await self.maybe_commit()
        if self.linger:  # a source that keeps reading until stopped
            await asyncio.Event().wait()

    async def commit_positions(self, positions: Mapping[str, Any]) -> None:
        if self.commit_errors:
            raise self.commit_errors.pop(0)
        if self.record:
            self.committed.append(dict(positions))
        else:
            await super().commit_positions(positions)


class GateSink(bspump.Sink):
    """Acknowledges every event except those in ``hold``, which it keeps until ``release()``."""

    def __init__(self, *args: Any, hold: set[Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hold = hold or set()
        self.held: list[tuple[bspump.Batch, int]] = []

    def put(self, batch: bspump.Batch) -> None:
        held = sum(1 for e in batch.events if e in self.hold)
        if len(batch) - held:
            batch.ack(len(batch) - held)
        if held:
            self.held.append((batch, held))

    def release(self) -> None:
        held, self.held = self.held, []
        for batch, count in held:
            batch.ack(count)


def pipeline(app: bspump.BSPumpApplication, source: Any, sink: Any, config: dict[str, Any] | None = None) -> Any:
    p = bspump.Pipeline(app, "P", config=config or {})
    p.build(source(p), sink(p))
    app.get_service("bspump.PumpService").add_pipeline(p)
    return p


async def test_commits_each_partitions_first_batch_at_once_and_the_rest_at_drain() -> None:
    app = make_app()
    batches = [("a", [1, 2]), ("b", [3]), ("a", [4]), ("b", [5]), ("a", [6])]
    p = pipeline(app, lambda p: Partitions(app, p, batches=batches, config={"commit_interval": "1h"}),
                 lambda p: bspump.MemorySink(app, p))
    assert await run_app(app) == 0
    # a process killed within its first hour re-reads only what came after each partition's first batch
    assert p.sources[0].committed == [{"a": 2}, {"b": 1}, {"a": 4, "b": 2}]
    assert p.sources[0].commits == 3


async def test_the_first_commit_waits_for_the_acknowledgement_then_comes_at_once() -> None:
    app = make_app()
    p = pipeline(app, lambda p: Partitions(app, p, batches=[("a", ["held"]), ("a", [1])], linger=True,
                                           config={"commit_interval": "1h"}),
                 lambda p: GateSink(app, p, hold={"held"}))
    source = p.sources[0]
    task = asyncio.create_task(run_app(app))
    await wait_for(lambda: p.sink.held)
    await source.maybe_commit()
    assert source.committed == []  # nothing acknowledged yet: nothing to commit
    p.sink.release()
    await source.maybe_commit()  # what the source's read loop calls after its next fetch
    assert source.committed == [{"a": 2}]
    app.stop()
    assert await task == 0


async def test_a_first_commit_that_fails_leaves_the_next_ones_to_the_interval() -> None:
    app = make_app()
    batches = [("a", [1]), ("a", [2]), ("a", [3])]
    p = pipeline(app, lambda p: Partitions(app, p, batches=batches, commit_errors=[ValueError("not authorised")],
                                           config={"commit_interval": "1h"}),
                 lambda p: bspump.MemorySink(app, p))
    assert await run_app(app) == 0
    assert p.sources[0].committed == [{"a": 3}]  # one attempt at the first batch, then only at drain


async def test_a_partition_assigned_again_commits_its_first_batch_at_once() -> None:
    app = make_app()
    p = pipeline(app, lambda p: Partitions(app, p, config={"commit_interval": "1h"}, linger=True),
                 lambda p: bspump.MemorySink(app, p))
    source = p.sources[0]
    task = asyncio.create_task(run_app(app))
    await wait_for(lambda: p.state is bspump.PipelineState.RUNNING)
    await source.emit([1], delivery=source.track({"a": 1}))
    await source.maybe_commit()
    await source.emit([2], delivery=source.track({"a": 2}))
    await source.maybe_commit()
    assert source.committed == [{"a": 1}]  # the second batch waits for the interval
    assert await source.revoke(["a"], timeout=1) == {"a": 2}  # a rebalance takes it away...
    await source.emit([3], delivery=source.track({"a": 3}))  # ...and gives it back
    await source.maybe_commit()
    assert source.committed == [{"a": 1}, {"a": 3}]
    app.stop()
    assert await task == 0


async def test_never_commits_past_an_unacknowledged_event() -> None:
    app = make_app()
    batches = [("a", [1, 2]), ("a", ["held"]), ("a", [3]), ("b", [4])]
    p = pipeline(app, lambda p: Partitions(app, p, batches=batches, config={"commit_interval": 0}),
                 lambda p: GateSink(app, p, hold={"held"}), {"drain_timeout": "50ms"})
    assert await run_app(app) == 0
    merged: dict[str, Any] = {}
    for commit in p.sources[0].committed:
        merged.update(commit)
    assert merged == {"a": 2, "b": 1}  # partition a stops before the held event; b is independent


async def test_commits_on_the_interval_while_running() -> None:
    app = make_app()

    class Endless(Partitions):
        async def main(self) -> None:
            n = 0
            while True:
                n += 1
                await self.emit([n], delivery=self.track({"a": n}))
                await self.maybe_commit()
                await asyncio.sleep(0.002)

    p = pipeline(app, lambda p: Endless(app, p, config={"commit_interval": "20ms"}),
                 lambda p: bspump.NullSink(app, p))
    task = asyncio.create_task(run_app(app))
    await wait_for(lambda: len(p.sources[0].committed) >= 3)
    app.stop()
    assert await task == 0
    values = [c["a"] for c in p.sources[0].committed]
    assert values == sorted(values) and values[-1] == p.sink.count  # the last commit is everything written


async def test_a_transient_commit_failure_keeps_the_positions_for_the_next_commit() -> None:
    app = make_app()
    batches = [("a", [1]), ("a", [2]), ("a", [3])]
    p = pipeline(app, lambda p: Partitions(app, p, batches=batches, commit_errors=[TimeoutError("busy")],
                                           config={"commit_interval": 0}),
                 lambda p: bspump.MemorySink(app, p))
    assert await run_app(app) == 0
    assert p.sources[0].committed[-1] == {"a": 3}


async def test_a_permanent_commit_failure_drops_the_positions(caplog: pytest.LogCaptureFixture) -> None:
    app = make_app()
    p = pipeline(app, lambda p: Partitions(app, p, batches=[("a", [1])], commit_errors=[ValueError("fenced")]),
                 lambda p: bspump.MemorySink(app, p))
    assert await run_app(app) == 0
    assert p.sources[0].committed == []
    assert "commit failed (ValueError: fenced); those positions are dropped" in caplog.text


async def test_revoke_waits_for_in_flight_events_then_returns_their_positions() -> None:
    app = make_app()
    batches = [("a", [1]), ("a", ["held"]), ("b", [2])]
    p = pipeline(app, lambda p: Partitions(app, p, batches=batches, linger=True, config={"commit_interval": "1h"}),
                 lambda p: GateSink(app, p, hold={"held"}))
    task = asyncio.create_task(run_app(app))
    source, sink = p.sources[0], p.sink
    await wait_for(lambda: source.tracker.pending(["b"]) == 0 and len(sink.held) == 1)
    revoking = asyncio.create_task(source.revoke(["a"], timeout=5))
    await asyncio.sleep(0.01)
    assert not revoking.done()  # still waiting for the held event of partition a
    sink.release()
    assert await revoking == {"a": 2}
    assert source.tracker.pending(["a"]) == 0
    app.stop()
    assert await task == 0
    # each partition's first batch was committed at once; a's second went to the caller of revoke, not committed
    assert source.committed == [{"a": 1}, {"b": 1}]


async def test_positions_survive_a_restart_through_the_checkpoint_store(tmp_path: Path) -> None:
    async def run(batches: Sequence[tuple[str, list[Any]]]) -> Any:
        app = make_app(environ={"BSPUMP_STATE_DIR": str(tmp_path / "state")})
        p = pipeline(app, lambda p: Partitions(app, p, batches=batches, record=False),
                     lambda p: bspump.MemorySink(app, p))
        assert await run_app(app) == 0
        return p.sources[0]

    first = await run([("a", [1, 2]), ("b", [3])])
    assert first.start_positions == {}
    second = await run([("a", [4])])
    assert second.start_positions == {"a": 2, "b": 1}
    third = await run([])
    assert third.start_positions == {"a": 3, "b": 1}  # partitions not read in the second run were kept


async def test_state_dir_from_general_section_relative_to_the_file(tmp_path: Path) -> None:
    conf = tmp_path / "conf" / "pipelines.conf"
    conf.parent.mkdir()
    conf.write_text("[general]\nstate_dir = state\n")
    app = make_app(conf)
    store = app.checkpoints
    assert isinstance(store, FileCheckpointStore)
    assert store.directory == tmp_path / "conf" / "state"


def test_general_section_reports_unknown_keys(tmp_path: Path) -> None:
    conf = tmp_path / "pipelines.conf"
    conf.write_text("[general]\nstate_dri = x\n")
    with pytest.raises(bspump.ConfigError, match=r"pipelines.conf:2 \[general\] state_dri: unknown key; did you mean"):
        make_app(conf)


# -- FileCheckpointStore -----------------------------------------------------------------------------------
async def test_file_store_saves_atomically_and_loads(tmp_path: Path) -> None:
    store = FileCheckpointStore(tmp_path / "state")
    assert await store.load("P.Source") == {}
    await store.save("P.Source", {"/data/in.log": {"offset": 10, "ino": 5}})
    await store.save("P.Source", {"/data/in.log": {"offset": 20, "ino": 5}})
    assert await store.load("P.Source") == {"/data/in.log": {"offset": 20, "ino": 5}}
    assert [p.name for p in (tmp_path / "state").iterdir()] == [store.path_of("P.Source").name]  # no temp file


def test_file_store_gives_distinct_files_to_keys_that_look_alike(tmp_path: Path) -> None:
    store = FileCheckpointStore(tmp_path)
    assert store.path_of("P.a/b") != store.path_of("P.a_b")
    assert store.path_of("../../etc/passwd").parent == tmp_path


async def test_a_corrupt_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    store = FileCheckpointStore(tmp_path)
    store.path_of("P.S").write_bytes(b'{"a": 1')
    with pytest.raises(CheckpointError, match=r"is not valid JSON; remove it to start from the beginning"):
        await store.load("P.S")


async def test_an_unwritable_state_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    store = FileCheckpointStore(blocker / "state")
    with pytest.raises(CheckpointError, match="cannot write checkpoint"):
        await store.save("P.S", {"a": 1})
    assert not os.path.exists(blocker / "state")
