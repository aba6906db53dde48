"""The connector SDK's sink bases: AsyncSink (concurrency, in-order acknowledgement, error classification)
and StreamingSink (send now, confirm later: resend only what failed, throttle on a bounded queue)."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Sequence
from typing import Any

import pytest
from conftest import make_app, run_app, wait_for

import bspump
from bspump import ErrorKind, ItemFailure
from bspump.failures import classify_error
from bspump.streaming_sink import Confirm

FAST = {"retry_backoff": "1ms", "retry_backoff_max": "5ms"}


class Pool(bspump.Connection):
    """A connection to a fake database pool: connects at once, counts how often it (re)connected."""

    async def connect(self) -> None:
        pass


class BatchesSource(bspump.Source):
    """Emits the given batches, each with a delivery that records when it completed."""

    def __init__(self, *args: Any, batches: Sequence[list[Any]] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches = list(batches)
        self.completed: list[int] = []

    async def main(self) -> None:
        for number, events in enumerate(self.batches):
            delivery = bspump.Delivery({"batch": number}, lambda d: self.completed.append(d.positions["batch"]))
            await self.emit(events, {"source": "test"}, delivery=delivery)


def pipeline(app: bspump.BSPumpApplication, sink: Any, batches: Sequence[list[Any]],
             config: dict[str, Any] | None = None, dead_letter: Any = None) -> bspump.Pipeline:
    p = bspump.Pipeline(app, "P", config={**FAST, **(config or {})})
    p.build(BatchesSource(app, p, batches=batches), sink(p), dead_letter=dead_letter(p) if dead_letter else None)
    return app.get_service("bspump.PumpService").add_pipeline(p)


# -- classification ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("error", "kind"), [
    (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), ErrorKind.LINK),
    (ConnectionResetError("reset"), ErrorKind.LINK),
    (OSError(errno.EHOSTUNREACH, "no route"), ErrorKind.LINK),
    (TimeoutError("timed out"), ErrorKind.TRANSIENT),
    (OSError(errno.ENOSPC, "No space left on device"), ErrorKind.TRANSIENT),
    (OSError(errno.EROFS, "Read-only file system"), ErrorKind.PERMANENT),
    (OSError(errno.EACCES, "Permission denied"), ErrorKind.PERMANENT),
    (IsADirectoryError(errno.EISDIR, "Is a directory"), ErrorKind.PERMANENT),
    (ValueError("bad document"), ErrorKind.PERMANENT),
])
def test_default_classification(error: BaseException, kind: ErrorKind) -> None:
    assert classify_error(error) is kind


def test_components_classify_through_their_connection() -> None:
    class Strict(Pool):
        def classify(self, error: BaseException) -> ErrorKind:
            return ErrorKind.TRANSIENT if isinstance(error, KeyError) else super().classify(error)

    app = make_app()
    app.get_service("bspump.PumpService").add_connection(Strict(app, "DB"))
    p = bspump.Pipeline(app, "P")
    with_connection = bspump.NullSink(app, p, connection="DB")
    without = bspump.NullSink(app, p, id="Other")
    assert with_connection.classify(KeyError("deadlock")) is ErrorKind.TRANSIENT
    assert without.classify(KeyError("deadlock")) is ErrorKind.PERMANENT


# -- AsyncSink ---------------------------------------------------------------------------------------------
class ParallelSink(bspump.AsyncSink):
    """Writes with a delay per batch; records how many writes ran at once and the order they finished in."""

    def __init__(self, *args: Any, delays: dict[int, float] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.delays = delays or {}
        self.active = 0
        self.peak = 0
        self.finished: list[Any] = []

    async def write(self, batch: bspump.Batch) -> None:
        self.active += 1
        self.peak = max(self.peak, self.active)
        await asyncio.sleep(self.delays.get(batch.events[0], 0.001))
        self.active -= 1
        self.finished.append(batch.events[0])


async def test_async_sink_writes_several_batches_at_once_and_acknowledges_in_order() -> None:
    app = make_app()
    batches = [[i * 10, i * 10 + 1] for i in range(6)]
    # The first batch is the slowest to write: later ones finish first, yet complete after it.
    p = pipeline(app, lambda p: ParallelSink(app, p, config={"concurrency": 3}, delays={0: 0.05}), batches)
    assert await run_app(app) == 0
    sink = p.sink
    assert isinstance(sink, ParallelSink)
    assert sink.peak == 3
    assert sink.finished[0] != 0  # writes did finish out of order...
    assert p.sources[0].completed == list(range(6))  # ...but deliveries completed in the order of the batches
    assert p.metrics()["out"] == 12


async def test_async_sink_with_concurrency_1_writes_one_batch_at_a_time() -> None:
    app = make_app()
    p = pipeline(app, lambda p: ParallelSink(app, p), [[i] for i in range(5)])
    assert await run_app(app) == 0
    assert p.sink.peak == 1 and p.sink.finished == [0, 1, 2, 3, 4]


def test_async_sink_concurrency_must_be_positive() -> None:
    app = make_app()
    with pytest.raises(bspump.ConfigError, match="concurrency"):
        ParallelSink(app, bspump.Pipeline(app, "P"), config={"concurrency": 0})


class FailingFirst(bspump.AsyncSink):
    """Raises ``error`` on the first ``times`` writes, then stores."""

    def __init__(self, *args: Any, error: BaseException, times: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.error = error
        self.times = times
        self.stored: list[Any] = []

    async def write(self, batch: bspump.Batch) -> None:
        if self.times:
            self.times -= 1
            raise self.error
        self.stored.extend(batch.events)


async def test_a_transient_write_error_is_retried_without_reconnecting_the_shared_pool() -> None:
    """A deadlock or a timeout says nothing about the link: the pool of other pipelines stays connected."""
    app = make_app()
    pool = app.get_service("bspump.PumpService").add_connection(Pool(app, "DB"))
    p = pipeline(app, lambda p: FailingFirst(app, p, connection="DB", error=TimeoutError("deadlock"), times=3),
                 [[1, 2], [3]])
    assert await run_app(app) == 0
    assert p.sink.stored == [1, 2, 3] and p.sink.write_errors == 3
    assert pool.failure_count == 0 and pool.connect_count == 1


async def test_a_link_write_error_reconnects_the_connection_and_is_retried() -> None:
    app = make_app()
    pool = app.get_service("bspump.PumpService").add_connection(
        Pool(app, "DB", config={"reconnect_initial": 0.01, "reconnect_max": 0.02}))
    p = pipeline(app, lambda p: FailingFirst(app, p, connection="DB", error=ConnectionResetError("reset"), times=2),
                 [[1, 2]])
    assert await run_app(app) == 0
    assert p.sink.stored == [1, 2]
    assert pool.failure_count >= 1 and pool.connect_count >= 2


async def test_a_transient_error_outliving_retry_timeout_meets_the_policy() -> None:
    app = make_app()
    p = pipeline(app, lambda p: FailingFirst(app, p, error=OSError(errno.ENOSPC, "No space left on device"),
                                             times=10**9, config={"retry_timeout": "30ms"}),
                 [[1, 2]], {"error_policy": "skip"})
    assert await run_app(app) == 0
    assert p.sink.stored == [] and p.sink.write_errors >= 2
    m = p.metrics()
    assert (m["out"], m["errors"], m["dropped"]) == (0, 2, 2)


async def test_out_counts_acknowledged_events_only() -> None:
    """A sink that fails every event must not show them as written in the summary."""
    app = make_app()
    p = pipeline(app, lambda p: FailingFirst(app, p, error=ValueError("no such table"), times=10**9),
                 [[1, 2, 3]], {"error_policy": "skip"})
    assert await run_app(app) == 0
    m = p.metrics()
    assert (m["in"], m["out"], m["errors"]) == (3, 0, 3)
    assert m["components"]["FailingFirst"]["out"] == 0


async def test_item_failures_may_say_their_kind() -> None:
    app = make_app()

    class Explicit(bspump.AsyncSink):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.calls = 0

        async def write(self, batch: bspump.Batch) -> Sequence[ItemFailure]:
            self.calls += 1
            # A ValueError would be permanent; the sink knows better (a version conflict worth retrying).
            return [ItemFailure(0, ValueError("version conflict"), ErrorKind.TRANSIENT)] if self.calls == 1 else []

    p = pipeline(app, lambda p: Explicit(app, p), [["a"]])
    assert await run_app(app) == 0
    assert p.sink.calls == 2 and p.metrics()["out"] == 1


# -- StreamingSink -----------------------------------------------------------------------------------------
class LaterSink(bspump.StreamingSink):
    """A client that confirms each batch a moment after taking it. ``refusals`` maps an event to the errors
    the client answers for it, one per attempt."""

    def __init__(self, *args: Any, refusals: dict[Any, list[BaseException]] | None = None,
                 hold: asyncio.Event | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refusals = refusals or {}
        self.hold = hold
        self.handed: list[list[Any]] = []
        self.stored: list[Any] = []
        self.opened = 0

    async def open_client(self) -> None:
        self.opened += 1

    async def send(self, batch: bspump.Batch, confirm: Confirm) -> None:
        if self.hold is not None:
            await self.hold.wait()
        self.handed.append(list(batch.events))
        failures = []
        for index, event in enumerate(batch.events):
            errors = self.refusals.get(event)
            if errors:
                failures.append(ItemFailure(index, errors.pop(0)))
            else:
                self.stored.append(event)
        asyncio.get_running_loop().call_later(0.002, confirm, failures)


async def test_streaming_sink_resends_only_what_failed_and_dead_letters_the_permanent() -> None:
    app = make_app()
    pool = app.get_service("bspump.PumpService").add_connection(
        Pool(app, "Broker", config={"reconnect_initial": 0.01, "reconnect_max": 0.02}))
    refusals: dict[Any, list[BaseException]] = {
        "busy": [TimeoutError("queue full")],
        "bad": [ValueError("record too large")],
        "down": [ConnectionResetError("broker gone")],
    }
    p = pipeline(app, lambda p: LaterSink(app, p, connection="Broker", refusals=refusals),
                 [[1, "busy", 2], ["bad", 3, "down"]], {"error_policy": "dead-letter"},
                 dead_letter=lambda p: bspump.MemorySink(app, p, id="DL"))
    assert await run_app(app) == 0
    sink = p.sink
    assert isinstance(sink, LaterSink)
    assert sorted(map(str, sink.stored)) == ["1", "2", "3", "busy", "down"]  # each written once
    assert sink.handed[:2] == [[1, "busy", 2], ["bad", 3, "down"]]
    assert sorted(map(str, (e for batch in sink.handed[2:] for e in batch))) == ["busy", "down"]  # only those again
    assert sink.sent == 5 and sink.resent == 2 and sink.opened == 1
    assert p.dead_letter_sink.events == ["bad"]
    assert pool.failure_count == 1  # the link failure was reported; the timeout was not
    assert sorted(p.sources[0].completed) == [0, 1]  # (a resend may complete a later batch first)
    assert p.metrics()["out"] == 5


async def test_streaming_sink_throttles_while_queue_limit_batches_wait() -> None:
    app = make_app()
    hold = asyncio.Event()
    p = pipeline(app, lambda p: LaterSink(app, p, hold=hold, config={"queue_limit": 2}),
                 [[i] for i in range(6)])
    task = asyncio.create_task(run_app(app))
    await wait_for(lambda: f"sink {p.sink.id} queue" in p.throttles)
    assert len(p.sources[0].completed) == 0
    hold.set()
    assert await task == 0
    assert p.sink.stored == list(range(6)) and p.sources[0].completed == list(range(6))


async def test_streaming_sink_transient_refusals_end_at_retry_timeout() -> None:
    app = make_app()
    refusals: dict[Any, list[BaseException]] = {"busy": [TimeoutError("no leader")] * 10_000}
    p = pipeline(app, lambda p: LaterSink(app, p, refusals=refusals, config={"retry_timeout": "30ms"}),
                 [[1, "busy"]], {"error_policy": "skip"})
    assert await run_app(app) == 0
    assert p.sink.stored == [1]
    assert p.metrics()["errors"] == 1 and p.sink.resent >= 1


async def test_streaming_sink_waits_one_backoff_for_a_wave_of_refused_batches() -> None:
    """An outage refuses every batch in flight at once: they are sent again after one backoff delay, not
    after one delay each, one after the other (8 batches at 1.5 s would wait 12 s; run_app gives up after 10 s)."""
    app = make_app()
    refusals: dict[Any, list[BaseException]] = {f"busy{i}": [TimeoutError("broker restarting")] for i in range(8)}
    p = pipeline(app, lambda p: LaterSink(app, p, refusals=refusals, config={"queue_limit": 8}),
                 [[f"busy{i}"] for i in range(8)], {"retry_backoff": "1500ms", "retry_backoff_max": "60s"})
    assert await run_app(app) == 0
    assert sorted(p.sink.stored) == sorted(refusals) and p.sink.resent == 8


def test_a_sink_subclass_must_implement_the_required_methods() -> None:
    app = make_app()

    class NoSend(bspump.StreamingSink):
        pass

    class NoWrite(bspump.AsyncSink):
        pass

    for cls, method in ((NoSend, "send"), (NoWrite, "write")):
        with pytest.raises(TypeError, match=method):
            cls(app, bspump.Pipeline(app, "P"))


async def test_a_sink_failure_while_the_pipeline_drains_still_fails_the_run() -> None:
    """The source was exhausted (the pipeline drains) when the sink met a permanent error under ``stop``:
    the run must end as failed, not as finished with exit code 0."""
    app = make_app()
    p = pipeline(app, lambda p: FailingFirst(app, p, error=ValueError("no such table"), times=1), [[1, 2]])
    assert await run_app(app) == 1
    assert p.state is bspump.PipelineState.FAILED and p.metrics()["out"] == 0
