"""Per-pipeline error policies (stop, skip, retry, dead-letter) for processors and sinks, and what they
mean for committed positions (at-least-once)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from conftest import make_app, run_app, wait_for

import bspump
from bspump import ItemFailure, PositionTracker

FAST_RETRY = {"retry_backoff": "1ms", "retry_backoff_max": "5ms"}


class TrackedSource(bspump.Source):
    """A source with positions, like a Kafka partition: commits only what the tracker allows."""

    def __init__(self, *args: Any, batches: Sequence[list[Any]] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tracker = PositionTracker()
        self.batches = list(batches)
        self.deliveries: list[bspump.Delivery] = []

    async def main(self) -> None:
        offset = 0
        for batch in self.batches:
            offset += len(batch)
            delivery = self.tracker.track({0: offset})
            self.deliveries.append(delivery)
            await self.emit(batch, {"partition": 0, "offset": offset}, delivery=delivery)

    @property
    def committed(self) -> int | None:
        return self.tracker.committed_view().get(0)


class FailOn(bspump.Processor):
    """Raises for events equal to ``bad``."""

    def __init__(self, *args: Any, bad: Any = "bad", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bad = bad
        self.calls = 0

    def process(self, context: dict[str, Any], event: Any) -> Any:
        self.calls += 1
        if event == self.bad:
            raise ValueError(f"cannot process {event!r}")
        return event


def build(app: bspump.BSPumpApplication, config: dict[str, Any], batches: Sequence[list[Any]], *middle: Any,
          sink: Any = None, dead_letter: Any = None) -> bspump.Pipeline:
    p = bspump.Pipeline(app, "P", config={**FAST_RETRY, **config})
    p.build(TrackedSource(app, p, batches=batches), *[m(p) for m in middle],
            sink(p) if sink else bspump.MemorySink(app, p),
            dead_letter=dead_letter(p) if dead_letter else None)
    return app.get_service("bspump.PumpService").add_pipeline(p)


# -- stop -------------------------------------------------------------------------------------------------
def test_stop_fails_the_pipeline_exit_code_1_and_never_commits_the_failing_batch() -> None:
    app = make_app()
    p = build(app, {"error_policy": "stop"}, [[1, 2], [3, "bad", 4], [5, 6]], lambda p: FailOn(app, p))
    assert app.run() == 1
    assert p.state is bspump.PipelineState.FAILED
    assert isinstance(p.error, bspump.ProcessingError)
    assert p.error.component_id == "FailOn" and isinstance(p.error.cause, ValueError)
    assert "partition=0" in str(p.error) and "'bad'" not in str(p.error).split(":", 2)[1]
    source = p.sources[0]
    assert p.sink.events == [1, 2]
    assert source.committed == 2  # the first batch, never the one that failed
    assert not source.deliveries[1].completed
    assert len(source.deliveries) == 2  # the source stopped reading
    assert p.metrics()["errors"] == 1


def test_stop_on_sink_item_failure_never_commits() -> None:
    app = make_app()

    class RejectingSink(bspump.AsyncSink):
        async def write(self, batch: bspump.Batch) -> Sequence[ItemFailure] | None:
            return [ItemFailure(i, ValueError("mapping conflict")) for i, e in enumerate(batch.events) if e == "bad"]

    p = build(app, {"error_policy": "stop"}, [[1, 2], ["bad", 3]], sink=lambda p: RejectingSink(app, p))
    assert app.run() == 1
    assert p.state is bspump.PipelineState.FAILED
    assert p.sources[0].committed == 2
    assert p.sources[0].deliveries[1].failed is not None
    assert p.in_flight == 0  # the failed event no longer counts as in flight: the stop did not hang


# -- skip -------------------------------------------------------------------------------------------------
async def test_skip_drops_and_counts_the_failed_event_and_the_rest_flows() -> None:
    app = make_app()
    p = build(app, {"error_policy": "skip"}, [[1, "bad", 2], ["bad"], [3]], lambda p: FailOn(app, p))
    assert await run_app(app) == 0
    assert p.sink.events == [1, 2, 3]
    m = p.metrics()
    assert (m["in"], m["out"], m["errors"], m["dropped"]) == (5, 3, 2, 2)
    assert m["components"]["FailOn"]["errors"] == 2
    assert p.sources[0].committed == 5  # skipped events are deliberately dropped: their positions commit


async def test_skip_in_per_event_context_mode() -> None:
    app = make_app()

    class Source(bspump.Source):
        async def main(self) -> None:
            await self.emit([1, "bad", 2], contexts=[{"offset": 1}, {"offset": 2}, {"offset": 3}])

    p = bspump.Pipeline(app, "P", config={"error_policy": "skip"})
    p.build(Source(app, p), FailOn(app, p), bspump.MemorySink(app, p))
    app.get_service("bspump.PumpService").add_pipeline(p)
    assert await run_app(app) == 0
    assert p.sink.events == [1, 2]
    assert [c["offset"] for c in p.sink.contexts] == [1, 3]


# -- retry ------------------------------------------------------------------------------------------------
class FlakyOnce(bspump.Processor):
    """Fails the first time it sees each event, succeeds the second time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: set[Any] = set()

    def process(self, context: dict[str, Any], event: Any) -> Any:
        if event not in self.seen:
            self.seen.add(event)
            raise TimeoutError(f"lookup service busy for {event}")
        return event * 10


async def test_retry_succeeds_on_the_second_call() -> None:
    app = make_app()
    p = build(app, {"error_policy": "retry", "retry_attempts": 2}, [[1, 2], [3]], lambda p: FlakyOnce(app, p))
    assert await run_app(app) == 0
    assert p.sink.events == [10, 20, 30]
    assert p.metrics()["dropped"] == 0
    assert p.sources[0].committed == 3


@pytest.mark.parametrize("fallback", ["skip", "dead-letter", "stop"])
async def test_retry_exhausted_then_retry_fallback(fallback: str) -> None:
    app = make_app()
    p = build(app, {"error_policy": "retry", "retry_attempts": 3, "retry_fallback": fallback},
              [[1, "bad", 2]], lambda p: FailOn(app, p),
              dead_letter=(lambda p: bspump.MemorySink(app, p, id="DL")) if fallback == "dead-letter" else None)
    exit_code = await run_app(app)
    failing = p.processors[0]
    if fallback == "stop":
        assert failing.calls == 3 + 3  # the batch, then three retries of bad (with backoff); then it stops
        assert exit_code == 1 and p.sink.events == [] and p.sources[0].committed is None
        return
    assert failing.calls == 3 + 3  # three events, plus three retries of the bad one
    assert exit_code == 0
    assert p.sink.events == [1, 2]
    assert p.sources[0].committed == 3
    if fallback == "dead-letter":
        assert p.dead_letter_sink.events == ["bad"]
    else:
        assert p.metrics()["dropped"] == 1


# -- dead-letter ------------------------------------------------------------------------------------------
class GatedSink(bspump.AsyncSink):
    """An external system that accepts writes only once ``gate`` opens."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()
        self.events: list[Any] = []
        self.contexts: list[dict[str, Any]] = []

    async def write(self, batch: bspump.Batch) -> None:
        await self.gate.wait()
        for context, event in batch:
            self.events.append(event)
            self.contexts.append(context)


async def test_dead_letter_gets_event_and_error_and_delivery_waits_for_its_ack() -> None:
    app = make_app()
    p = build(app, {"error_policy": "dead-letter"}, [[1, "bad", 2]], lambda p: FailOn(app, p),
              dead_letter=lambda p: GatedSink(app, p, id="DL"))
    runner = asyncio.create_task(run_app(app))
    source = p.sources[0]
    await wait_for(lambda: p.sink.events == [1, 2])
    await asyncio.sleep(0.02)
    assert source.committed is None, "committed before the dead-lettered event was written"
    assert not source.deliveries[0].completed
    assert p.in_flight == 1
    p.dead_letter_sink.gate.set()
    assert await runner == 0
    assert source.committed == 3
    dl = p.dead_letter_sink
    assert dl.events == ["bad"]
    [ctx] = dl.contexts
    assert ctx["error"] == "ValueError: cannot process 'bad'"
    assert ctx["error_type"] == "ValueError"
    assert ctx["error_component"] == "P.FailOn"
    assert ctx["error_pipeline"] == "P"
    assert ctx["partition"] == 0  # the original context travels along
    assert p.metrics()["errors"] == 1


async def test_dead_letter_sink_that_fails_itself_stops_the_pipeline() -> None:
    app = make_app()

    class BrokenDL(bspump.AsyncSink):
        async def write(self, batch: bspump.Batch) -> None:
            raise ValueError("dead-letter index is read-only")

    p = build(app, {"error_policy": "dead-letter"}, [[1, "bad", 2]], lambda p: FailOn(app, p),
              dead_letter=lambda p: BrokenDL(app, p, id="DL"))
    assert await run_app(app) == 1
    assert p.state is bspump.PipelineState.FAILED
    assert p.sources[0].committed is None


# -- sinks: per-item failures and transient errors ---------------------------------------------------------
class BulkSink(bspump.AsyncSink):
    """A bulk API: items named 'busy' fail transiently (a timeout) on first try, items named 'bad' fail for good."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stored: list[Any] = []
        self.busy_seen: set[Any] = set()
        self.calls = 0

    async def write(self, batch: bspump.Batch) -> Sequence[ItemFailure] | None:
        self.calls += 1
        failures = []
        for index, event in enumerate(batch.events):
            if str(event).startswith("bad"):
                failures.append(ItemFailure(index, ValueError(f"rejected {event}")))
            elif str(event).startswith("busy") and event not in self.busy_seen:
                self.busy_seen.add(event)
                failures.append(ItemFailure(index, TimeoutError("429 too many requests")))
            else:
                self.stored.append(event)
        return failures


async def test_sink_item_failures_retry_transient_and_dead_letter_the_rest() -> None:
    app = make_app()
    p = build(app, {"error_policy": "dead-letter"}, [[1, "busy1", "bad1", 2, "busy2"], [3, "bad2"]],
              sink=lambda p: BulkSink(app, p), dead_letter=lambda p: bspump.MemorySink(app, p, id="DL"))
    assert await run_app(app) == 0
    sink = p.sink
    assert sorted(map(str, sink.stored)) == ["1", "2", "3", "busy1", "busy2"]
    assert p.dead_letter_sink.events == ["bad1", "bad2"]
    assert [c["error"] for c in p.dead_letter_sink.contexts] == ["ValueError: rejected bad1",
                                                                 "ValueError: rejected bad2"]
    assert all(c["error_component"] == "P.BulkSink" for c in p.dead_letter_sink.contexts)
    assert p.sources[0].committed == 7
    assert p.in_flight == 0


async def test_sink_item_failures_skip_policy_keeps_the_rest_of_the_batch() -> None:
    app = make_app()
    p = build(app, {"error_policy": "skip"}, [["bad", 1, 2, "bad3", 4]], sink=lambda p: BulkSink(app, p))
    assert await run_app(app) == 0
    assert p.sink.stored == [1, 2, 4]
    assert p.metrics()["dropped"] == 2 and p.metrics()["errors"] == 2
    assert p.sources[0].committed == 5


async def test_transient_item_failing_past_retry_timeout_goes_to_the_policy() -> None:
    app = make_app()

    class AlwaysBusy(bspump.AsyncSink):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.attempts = 0
            self.stored: list[Any] = []

        async def write(self, batch: bspump.Batch) -> Sequence[ItemFailure] | None:
            failures = []
            for index, event in enumerate(batch.events):
                if event == "busy":
                    self.attempts += 1
                    failures.append(ItemFailure(index, TimeoutError("still busy")))
                else:
                    self.stored.append(event)
            return failures

    p = build(app, {"error_policy": "skip", "retry_attempts": 2}, [[1, "busy", 2]],
              sink=lambda p: AlwaysBusy(app, p, config={"retry_timeout": "50ms"}))
    assert await run_app(app) == 0
    assert p.sink.stored == [1, 2]
    assert p.sink.attempts >= 2  # tried again with backoff until retry_timeout passed, then skipped
    assert p.metrics()["dropped"] == 1
    assert p.sources[0].committed == 3


async def test_transient_write_exception_is_retried_until_success() -> None:
    app = make_app()

    class Unstable(bspump.AsyncSink):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.failures_left = 4
            self.stored: list[Any] = []

        async def write(self, batch: bspump.Batch) -> None:
            if self.failures_left:
                self.failures_left -= 1
                raise ConnectionResetError("connection reset by peer")
            self.stored.extend(batch.events)

    p = build(app, {"error_policy": "stop", "retry_attempts": 1}, [[1, 2], [3]], sink=lambda p: Unstable(app, p))
    assert await run_app(app) == 0
    assert p.sink.stored == [1, 2, 3]  # each event exactly once, in order
    assert p.sink.write_errors == 4
    assert p.sources[0].committed == 3


async def test_non_transient_write_exception_fails_every_item_to_the_policy() -> None:
    app = make_app()

    class Invalid(bspump.AsyncSink):
        async def write(self, batch: bspump.Batch) -> None:
            raise ValueError("schema mismatch")

    p = build(app, {"error_policy": "dead-letter"}, [[1, 2]], sink=lambda p: Invalid(app, p),
              dead_letter=lambda p: bspump.MemorySink(app, p, id="DL"))
    assert await run_app(app) == 0
    assert p.dead_letter_sink.events == [1, 2]
    assert p.sources[0].committed == 2


class HalfwayGenerator(bspump.Generator):
    """Yields one part, then fails for 'bad' events (on the first ``fail_times`` calls)."""

    def __init__(self, *args: Any, fail_times: int = 1_000, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fail_times = fail_times

    def generate(self, context: dict[str, Any], event: Any) -> Any:
        yield f"{event}-a"
        if event == "bad" and self.fail_times > 0:
            self.fail_times -= 1
            raise ValueError("failed halfway")
        yield f"{event}-b"


@pytest.mark.parametrize("per_event", [False, True])
@pytest.mark.parametrize(("policy", "expected"), [
    ({"error_policy": "skip"}, ["ok-a", "ok-b", "ok2-a", "ok2-b"]),
    # A retried event rejoins at the end of its batch, after its backoff.
    ({"error_policy": "retry", "retry_attempts": 2}, ["ok-a", "ok-b", "ok2-a", "ok2-b", "bad-a", "bad-b"]),
])
async def test_generator_failing_halfway_emits_nothing_of_the_failed_event(
    per_event: bool, policy: dict[str, Any], expected: list[str]
) -> None:
    app = make_app()

    class Source(bspump.Source):
        async def main(self) -> None:
            events = ["ok", "bad", "ok2"]
            await self.emit(events, contexts=[{"i": i} for i in range(3)] if per_event else None)

    p = bspump.Pipeline(app, "P", config={**FAST_RETRY, **policy})
    p.build(Source(app, p), HalfwayGenerator(app, p, fail_times=1), bspump.MemorySink(app, p))
    app.get_service("bspump.PumpService").add_pipeline(p)
    assert await run_app(app) == 0
    assert p.sink.events == expected  # no half of a skipped event, no duplicate half of a retried one


async def test_processor_retry_backs_off_between_attempts() -> None:
    """Retries of a failing processor wait retry_backoff, growing, instead of hammering at once."""
    import itertools
    import time

    app = make_app()

    class Stamped(bspump.Processor):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.stamps: list[float] = []

        def process(self, context: dict[str, Any], event: Any) -> Any:
            if event == "bad":
                self.stamps.append(time.monotonic())
                raise ValueError("still failing")
            return event

    p = build(app, {"error_policy": "retry", "retry_attempts": 3, "retry_fallback": "skip",
                    "retry_backoff": "40ms", "retry_backoff_max": "1s"},
              [[1, "bad", 2]], lambda p: Stamped(app, p))
    assert await run_app(app) == 0
    stamps = p.processors[0].stamps
    assert len(stamps) == 4  # the first call and three retries
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    # Delays are 40, 80, 160 ms, each +/- 20 % jitter: every gap is at least the jittered lower bound.
    assert gaps[0] >= 0.032 and gaps[1] >= 0.064 and gaps[2] >= 0.128
    assert p.sink.events == [1, 2] and p.sources[0].committed == 3


async def test_link_item_failures_are_retried_past_any_budget_even_under_stop() -> None:
    """A link failure (the server went away) must not stop the pipeline nor lose the event, however long."""
    app = make_app()

    class Flaky(bspump.AsyncSink):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.events: list[Any] = []
            self.refusals = 6  # more than retry_attempts

        async def write(self, batch: bspump.Batch) -> Any:
            failures = []
            for index, event in enumerate(batch.events):
                if event == "b" and self.refusals > 0:
                    self.refusals -= 1
                    failures.append(ItemFailure(index, ConnectionError("no leader")))
                else:
                    self.events.append(event)
            return failures

    p = build(app, {"error_policy": "stop", "retry_attempts": 2}, [["a", "b", "c"]],
              sink=lambda p: Flaky(app, p, config={"retry_timeout": "1ms"}))
    assert await run_app(app) == 0
    assert sorted(p.sink.events) == ["a", "b", "c"] and p.sink.refusals == 0
    assert p.sources[0].committed == 3
    assert not p.sink.is_dead_letter


async def test_is_dead_letter_marks_the_dead_letter_sink() -> None:
    app = make_app()
    p = build(app, {"error_policy": "dead-letter"}, [[1]], dead_letter=lambda p: bspump.MemorySink(app, p, id="DL"))
    assert p.dead_letter_sink is not None and p.dead_letter_sink.is_dead_letter
    assert p.sink is not None and not p.sink.is_dead_letter
