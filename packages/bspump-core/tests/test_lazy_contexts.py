"""Lazy per-event contexts: built only where a processor, the sink or an error policy reads them, and then
exactly what an eagerly built list would have held."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

import pytest
from conftest import make_app, run_app

import bspump
from bspump.lazy_contexts import UNREAD_CONTEXT, reads_context, select_contexts

FAST_RETRY = {"retry_backoff": "1ms", "retry_backoff_max": "5ms"}


class Positions(bspump.LazyContexts):
    """Rows are offsets; ``made`` lists the rows it built contexts for (shared with its selections)."""

    __slots__ = ("made",)

    def __init__(self, rows: Sequence[int]) -> None:
        super().__init__(rows)
        self.made: list[int] = []

    @property
    def built(self) -> int:
        return len(self.made)

    def make(self, row: int) -> dict[str, Any]:
        self.made.append(row)
        return {"topic": "t", "partition": 0, "offset": row}

    def row_column(self, key: str) -> list[Any] | None:
        if key == "offset":
            return list(self.rows)
        return None


# -- which processors read their context --------------------------------------------------------------
class Ignores(bspump.Processor):
    def process(self, context: dict[str, Any], event: Any) -> Any:
        return event


class Reads(bspump.Processor):
    def process(self, context: dict[str, Any], event: Any) -> Any:
        return {**event, "offset": context["offset"]}


class CallsSuper(Reads):
    def process(self, context: dict[str, Any], event: Any) -> Any:
        return super().process(context, event)


class Captures(bspump.Processor):
    def process(self, context: dict[str, Any], event: Any) -> Any:
        return (lambda: context)()


class Introspects(bspump.Processor):
    def process(self, context: dict[str, Any], event: Any) -> Any:
        return locals()["context"]


class Rebinds(bspump.Processor):
    def process(self, context: dict[str, Any], event: Any) -> Any:
        context = {}  # noqa: F841 -- the point: rebinding the parameter is not reading it
        return event


def test_reads_context_answers_no_only_when_the_code_provably_never_touches_it() -> None:
    app = make_app()
    p = bspump.Pipeline(app, "P")
    assert not reads_context(Ignores(app, p).process)
    assert not reads_context(lambda context, event: event)
    assert not reads_context(Rebinds(app, p).process)  # binding the name reads nothing
    for reading in (Reads, CallsSuper, Captures, Introspects):
        assert reads_context(reading(app, p).process), reading.__name__
    assert reads_context(lambda context, event: context)
    assert reads_context(lambda *args: args[1])
    assert reads_context(functools.partial(lambda extra, context, event: event, 1))  # cannot tell: assume so
    assert reads_context(print)
    assert not reads_context(bspump.Processor(app, p).process)  # the base passes events on untouched


def test_lazy_contexts_build_each_context_once_and_only_when_read() -> None:
    contexts = Positions([10, 11, 12])
    assert len(contexts) == 3 and contexts.built == 0
    first = contexts[1]
    assert first == {"topic": "t", "partition": 0, "offset": 11}
    assert contexts[1] is first and contexts[-2] is first and contexts.built == 1
    first["seen"] = True  # a reader's change is seen by the next reader
    assert contexts[1]["seen"] is True
    assert [c["offset"] for c in contexts[0:2]] == [10, 11]
    everything = contexts.materialize()
    assert [c["offset"] for c in everything] == [10, 11, 12] and everything[1] is first
    assert sorted(contexts.made) == [10, 11, 12]  # none built twice
    assert list(contexts) == everything
    with pytest.raises(IndexError):
        contexts[3]
    emptied = Positions([1, 2])
    cleared = emptied[0]
    cleared.clear()  # an empty context is still the one a reader holds
    assert emptied.materialize()[0] is cleared and emptied.made == [1, 2]


def test_columns_without_building_and_views_after_drops() -> None:
    contexts = Positions([10, 11, 12, 13])
    assert contexts.column("offset") == [10, 11, 12, 13] and contexts.built == 0
    assert contexts.column("topic") == ["t"] * 4 and contexts.built == 4  # unknown as a column: built
    lazy = Positions([10, 11, 12, 13])
    lazy[2]["mark"] = "kept"
    kept = select_contexts(lazy, [0, 2])
    assert isinstance(kept, Positions) and len(kept) == 2
    assert kept[1]["mark"] == "kept" and kept[1] is lazy[2]  # what was read carries over
    assert kept[0]["offset"] == 10
    assert kept.column("mark") == [None, "kept"]  # a column once something was read: from the contexts
    assert select_contexts([{"a": 1}, {"a": 2}], [1]) == [{"a": 2}]


def test_the_placeholder_cannot_be_written() -> None:
    with pytest.raises(TypeError):
        UNREAD_CONTEXT["key"] = 1  # type: ignore[index]


# -- through a pipeline ----------------------------------------------------------------------------------
class LazySource(bspump.Source):
    def __init__(self, *args: Any, count: int = 6, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.count = count
        self.contexts: Positions | None = None

    async def main(self) -> None:
        self.contexts = Positions(list(range(self.count)))
        await self.emit([{"n": n} for n in range(self.count)], contexts=self.contexts)


class DropOdd(bspump.Processor):
    def process(self, context: dict[str, Any], event: Any) -> Any:
        return event if event["n"] % 2 == 0 else None


class FailOnThree(bspump.Processor):
    def __init__(self, *args: Any, fail_times: int = 1000, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fail_times = fail_times

    def process(self, context: dict[str, Any], event: Any) -> Any:
        if event["n"] == 3 and self.fail_times > 0:
            self.fail_times -= 1
            raise ValueError("three is bad")
        return event


class Twice(bspump.Generator):
    def generate(self, context: dict[str, Any], event: Any) -> Iterable[Any]:
        yield event
        yield {**event, "copy": True}


class Collect(bspump.MemorySink):
    """Keeps the contexts object each batch arrived with, before reading it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arrived: list[Any] = []
        self.built_before_sink = -1

    def put(self, batch: bspump.Batch) -> None:
        self.arrived.append(batch.contexts)
        if isinstance(batch.contexts, Positions):
            self.built_before_sink = batch.contexts.built
        super().put(batch)


def run(*middle: Any, config: dict[str, Any] | None = None, dead_letter: bool = False) -> tuple[
        bspump.Pipeline, LazySource, Collect, bspump.MemorySink | None]:
    app = make_app()
    p = bspump.Pipeline(app, "P", config={**FAST_RETRY, **(config or {})})
    source = LazySource(app, p)
    sink = Collect(app, p)
    letters = bspump.MemorySink(app, p, id="Letters") if dead_letter else None
    p.build(source, *[m(app, p) for m in middle], sink, dead_letter=letters)
    app.get_service("bspump.PumpService").add_pipeline(p)
    return p, source, sink, letters


async def test_processors_that_ignore_their_context_leave_it_unbuilt() -> None:
    p, _, sink, _ = run(Ignores, DropOdd)
    assert await run_app(p.app) == 0
    assert sink.events == [{"n": 0}, {"n": 2}, {"n": 4}]
    assert isinstance(sink.arrived[0], Positions) and sink.built_before_sink == 0
    assert [c["offset"] for c in sink.contexts] == [0, 2, 4]  # still aligned after the drops


async def test_a_processor_that_reads_gets_real_contexts_and_its_changes_travel() -> None:
    class Marks(bspump.Processor):
        def process(self, context: dict[str, Any], event: Any) -> Any:
            context["marked"] = event["n"]
            return event

    p, source, sink, _ = run(DropOdd, Marks, Reads)
    assert await run_app(p.app) == 0
    assert sink.events == [{"n": 0, "offset": 0}, {"n": 2, "offset": 2}, {"n": 4, "offset": 4}]
    assert [c["marked"] for c in sink.contexts] == [0, 2, 4]
    assert source.contexts is not None and source.contexts.made == [0, 2, 4]  # only the survivors of DropOdd


async def test_a_failed_event_meets_the_policy_with_its_own_context() -> None:
    p, _, sink, letters = run(Ignores, FailOnThree, config={"error_policy": "dead-letter"}, dead_letter=True)
    assert await run_app(p.app) == 0
    assert [e["n"] for e in sink.events] == [0, 1, 2, 4, 5]
    assert [c["offset"] for c in sink.contexts] == [0, 1, 2, 4, 5]
    assert letters is not None and letters.events == [{"n": 3}]
    assert letters.contexts[0]["offset"] == 3 and "three is bad" in letters.contexts[0]["error"]


async def test_retried_events_keep_their_contexts() -> None:
    p, _, sink, _ = run(lambda app, p: FailOnThree(app, p, fail_times=1), Ignores,
                             config={"error_policy": "retry", "retry_attempts": 3})
    assert await run_app(p.app) == 0
    assert sorted(e["n"] for e in sink.events) == [0, 1, 2, 3, 4, 5]
    assert {e["n"]: c["offset"] for e, c in zip(sink.events, sink.contexts, strict=True)} == {n: n for n in range(6)}


async def test_generators_share_the_context_of_their_input() -> None:
    p, _, sink, _ = run(DropOdd, Twice)
    assert await run_app(p.app) == 0
    assert [(e["n"], c["offset"]) for e, c in zip(sink.events, sink.contexts, strict=True)] == [
        (0, 0), (0, 0), (2, 2), (2, 2), (4, 4), (4, 4)]
    assert sink.contexts[0] is sink.contexts[1]

