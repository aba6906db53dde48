"""Pipelines: build validation, the batched hot path (shared and per-event contexts), metrics,
several sources, TriggerSource, Lookups, locate."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

import pytest
from conftest import make_app, run_app

import bspump


class AddField(bspump.Processor):
    def process(self, context: dict[str, Any], event: Any) -> Any:
        return {**event, "seen": True}


class DropOdd(bspump.Processor):
    def process(self, context: dict[str, Any], event: Any) -> Any:
        return event if event["n"] % 2 == 0 else None


class Split(bspump.Generator):
    def generate(self, context: dict[str, Any], event: Any) -> Iterable[Any]:
        for part in event["parts"]:
            yield {"n": event["n"], "part": part}


class TagFromContext(bspump.Processor):
    def process(self, context: dict[str, Any], event: Any) -> Any:
        return {**event, "tag": context.get("tag")}


def pipeline_of(app: bspump.BSPumpApplication, pid: str, *makers: Any, config: Mapping[str, Any] | None = None,
                dead_letter: Any = None) -> bspump.Pipeline:
    pipeline = bspump.Pipeline(app, pid, config=config)
    components = [maker(pipeline) for maker in makers]
    pipeline.build(*components, dead_letter=dead_letter(pipeline) if dead_letter else None)
    return app.get_service("bspump.PumpService").add_pipeline(pipeline)


# -- build validation ------------------------------------------------------------------------------------
def test_build_needs_a_source_first(app: bspump.BSPumpApplication) -> None:
    p = bspump.Pipeline(app, "P")
    with pytest.raises(bspump.PipelineBuildError, match="must start with at least one Source, got Processor"):
        p.build(bspump.Processor(app, p), bspump.MemorySink(app, p))
    with pytest.raises(bspump.PipelineBuildError, match="got nothing"):
        p.build()


def test_build_needs_a_sink_last(app: bspump.BSPumpApplication) -> None:
    p = bspump.Pipeline(app, "P")
    with pytest.raises(bspump.PipelineBuildError, match="must end with a Sink, got AddField"):
        p.build(bspump.MemorySource(app, p), AddField(app, p))
    with pytest.raises(bspump.PipelineBuildError, match="only sources"):
        p.build(bspump.MemorySource(app, p))


def test_build_rejects_non_processors_in_the_middle(app: bspump.BSPumpApplication) -> None:
    p = bspump.Pipeline(app, "P")
    with pytest.raises(bspump.PipelineBuildError, match="MemorySink 'Middle' cannot stand between"):
        p.build(bspump.MemorySource(app, p), bspump.MemorySink(app, p, id="Middle"), bspump.MemorySink(app, p))
    with pytest.raises(bspump.PipelineBuildError, match="cannot stand between"):
        p.build(bspump.MemorySource(app, p), "not a component", bspump.MemorySink(app, p))


def test_build_rejects_duplicate_component_ids(app: bspump.BSPumpApplication) -> None:
    p = bspump.Pipeline(app, "P")
    with pytest.raises(bspump.PipelineBuildError, match="two components have the ID 'AddField'"):
        p.build(bspump.MemorySource(app, p), AddField(app, p), AddField(app, p), bspump.MemorySink(app, p))
    p.build(bspump.MemorySource(app, p), AddField(app, p), AddField(app, p, id="Again"), bspump.MemorySink(app, p))
    with pytest.raises(bspump.PipelineBuildError, match="already built"):
        p.build(bspump.MemorySource(app, p), bspump.MemorySink(app, p))


def test_dead_letter_policy_without_a_dead_letter_sink(app: bspump.BSPumpApplication) -> None:
    for config in ({"error_policy": "dead-letter"}, {"error_policy": "retry", "retry_fallback": "dead_letter"}):
        p = bspump.Pipeline(app, "P", config=config)
        with pytest.raises(bspump.PipelineBuildError, match="no dead-letter sink"):
            p.build(bspump.MemorySource(app, p), bspump.MemorySink(app, p))


def test_bad_pipeline_settings(app: bspump.BSPumpApplication) -> None:
    with pytest.raises(bspump.ConfigError,
                       match="error_policy: expected one of stop, skip, retry, dead-letter, got 'explode'"):
        bspump.Pipeline(app, "P", config={"error_policy": "explode"})
    with pytest.raises(bspump.ConfigError, match="cannot be 'retry'"):
        bspump.Pipeline(app, "P", config={"error_policy": "retry", "retry_fallback": "retry"})
    with pytest.raises(bspump.ConfigError, match="max_in_flight: expected an integer from 1 to 10000000, got 0"):
        bspump.Pipeline(app, "P", config={"max_in_flight": 0})
    with pytest.raises(bspump.ConfigError, match="did you mean 'max_in_flight'"):
        bspump.Pipeline(app, "P", config={"max_inflight": 5})


async def test_unbuilt_pipeline_fails_to_start(app: bspump.BSPumpApplication) -> None:
    app.get_service("bspump.PumpService").add_pipeline(bspump.Pipeline(app, "Empty"))
    with pytest.raises(bspump.PipelineBuildError, match="never built"):
        await run_app(app)


# -- hot path ---------------------------------------------------------------------------------------------
async def test_processors_generators_and_filters_with_a_shared_context(app: bspump.BSPumpApplication) -> None:
    events = [{"n": n, "parts": ["a", "b"]} for n in range(10)]
    p = pipeline_of(
        app, "P",
        lambda p: bspump.MemorySource(app, p, events=events, config={"batch_size": 4}),
        lambda p: DropOdd(app, p),
        lambda p: Split(app, p),
        lambda p: AddField(app, p),
        lambda p: bspump.MemorySink(app, p),
    )
    assert await run_app(app) == 0
    assert p.sink.events == [{"n": n, "part": part, "seen": True} for n in range(0, 10, 2) for part in "ab"]
    assert all(ctx == {"source": "memory"} for ctx in p.sink.contexts)
    m = p.metrics()
    assert (m["in"], m["out"], m["dropped"], m["errors"], m["in_flight"]) == (10, 10, 5, 0, 0)
    assert m["state"] == "finished"
    comps = m["components"]
    assert (comps["DropOdd"]["in"], comps["DropOdd"]["out"], comps["DropOdd"]["dropped"]) == (10, 5, 5)
    assert (comps["Split"]["in"], comps["Split"]["out"], comps["Split"]["dropped"]) == (5, 10, 0)
    assert (comps["AddField"]["in"], comps["AddField"]["out"]) == (10, 10)
    assert set(comps) == {"MemorySource", "DropOdd", "Split", "AddField", "MemorySink"}
    assert comps["MemorySource"]["out"] == 10  # sources count what they emitted
    assert comps["MemorySink"]["in"] == 10  # sinks count what they were handed


class PerEventSource(bspump.Source):
    """Emits one batch whose events each carry their own context (e.g. Kafka partition/offset)."""

    async def main(self) -> None:
        events = [{"n": n, "parts": ["x"] * (n % 3)} for n in range(6)]
        contexts = [{"tag": f"t{n}", "offset": n} for n in range(6)]
        await self.emit(events, contexts=contexts)


async def test_per_event_contexts_travel_with_their_events(app: bspump.BSPumpApplication) -> None:
    p = pipeline_of(
        app, "P",
        lambda p: PerEventSource(app, p),
        lambda p: DropOdd(app, p),
        lambda p: Split(app, p),  # n=0 -> 0 events, n=2 -> 2, n=4 -> 1
        lambda p: TagFromContext(app, p),
        lambda p: bspump.MemorySink(app, p),
    )
    assert await run_app(app) == 0
    assert p.sink.events == [
        {"n": 2, "part": "x", "tag": "t2"}, {"n": 2, "part": "x", "tag": "t2"}, {"n": 4, "part": "x", "tag": "t4"},
    ]
    assert [c["offset"] for c in p.sink.contexts] == [2, 2, 4]
    m = p.metrics()
    assert (m["in"], m["out"]) == (6, 3)
    assert m["components"]["DropOdd"]["dropped"] == 3


async def test_contexts_must_match_events(app: bspump.BSPumpApplication) -> None:
    class Mismatch(bspump.Source):
        async def main(self) -> None:
            await self.emit([1, 2], contexts=[{}])

    p = pipeline_of(app, "P", lambda p: Mismatch(app, p), lambda p: bspump.MemorySink(app, p))
    assert await run_app(app) == 1
    assert isinstance(p.error, ValueError)
    assert p.state is bspump.PipelineState.FAILED


async def test_several_sources_feed_one_pipeline(app: bspump.BSPumpApplication) -> None:
    p = pipeline_of(
        app, "P",
        lambda p: [bspump.MemorySource(app, p, id="A", events=[{"n": n} for n in range(0, 100, 2)]),
                   bspump.MemorySource(app, p, id="B", events=[{"n": n} for n in range(1, 100, 2)],
                                       config={"batch_size": 7})],
        lambda p: bspump.MemorySink(app, p),
    )
    assert len(p.sources) == 2
    assert await run_app(app) == 0
    assert sorted(e["n"] for e in p.sink.events) == list(range(100))
    assert p.metrics()["in"] == 100


async def test_pipeline_subclass_with_config_file_section(tmp_path: Any) -> None:
    (tmp_path / "pipelines.conf").write_text("[pipeline:Sub]\nmax_in_flight = 7\n\n"
                                             "[pipeline:Sub:Src]\nbatch_size = 3\n")
    app = make_app(tmp_path / "pipelines.conf")

    class Sub(bspump.Pipeline):
        def __init__(self, app: Any, pipeline_id: str) -> None:
            super().__init__(app, pipeline_id)
            self.build(bspump.MemorySource(app, self, id="Src", events=range(10)), bspump.MemorySink(app, self))

    p = app.get_service("bspump.PumpService").add_pipeline(Sub(app, "Sub"))
    assert p.max_in_flight == 7
    assert p.sources[0].batch_size == 3
    assert await run_app(app) == 0
    assert p.sink.events == list(range(10))


# -- trigger sources --------------------------------------------------------------------------------------
class Poller(bspump.TriggerSource):
    async def cycle(self) -> None:
        await self.emit([{"cycle": self.cycle_count}])


async def test_trigger_source_with_periodic_trigger_and_cycles(app: bspump.BSPumpApplication) -> None:
    p = pipeline_of(app, "P", lambda p: Poller(app, p, config={"interval": 0.01, "cycles": 3}),
                    lambda p: bspump.MemorySink(app, p))
    assert isinstance(p.sources[0].trigger, bspump.PeriodicTrigger)
    assert await run_app(app) == 0
    assert p.sink.events == [{"cycle": 0}, {"cycle": 1}, {"cycle": 2}]
    assert p.sources[0].cycle_count == 3


async def test_trigger_source_with_explicit_trigger_and_manual_trigger(app: bspump.BSPumpApplication) -> None:
    manual = bspump.ManualTrigger()
    periodic = pipeline_of(app, "Periodic",
                           lambda p: Poller(app, p, trigger=bspump.PeriodicTrigger(0.005), config={"cycles": 2}),
                           lambda p: bspump.MemorySink(app, p))
    manual_p = pipeline_of(app, "Manual", lambda p: Poller(app, p, trigger=manual, config={"cycles": 2}),
                           lambda p: bspump.MemorySink(app, p))
    runner = asyncio.create_task(run_app(app))
    await periodic.wait_finished()
    assert manual_p.sink.events == []
    manual.fire()
    await asyncio.sleep(0.01)
    assert manual_p.sink.events == [{"cycle": 0}]
    manual.fire()
    assert await runner == 0
    assert manual_p.sink.events == [{"cycle": 0}, {"cycle": 1}]
    assert len(periodic.sink.events) == 2
    with pytest.raises(ValueError, match="must be positive"):
        bspump.PeriodicTrigger(0)


# -- lookups ----------------------------------------------------------------------------------------------
class CountryLookup(bspump.Lookup):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loads = 0

    async def load(self) -> Mapping[str, str]:
        await asyncio.sleep(0.01)
        self.loads += 1
        return {"cz": "Czechia", "de": "Germany"}


class Enrich(bspump.Processor):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lookup = self.app.get_service("bspump.PumpService").locate_lookup("Countries", referrer=self.qualified_id)

    def process(self, context: dict[str, Any], event: Any) -> Any:
        assert self.lookup.loaded, "a processor ran before its lookup was loaded"
        return {**event, "country": self.lookup.get(event["cc"], "unknown")}


async def test_lookup_is_loaded_before_pipelines_start(app: bspump.BSPumpApplication,
                                                       svc: bspump.PumpService) -> None:
    lookup = svc.add_lookup(CountryLookup(app, "Countries"))
    assert not lookup.loaded and len(lookup) == 0
    p = pipeline_of(app, "P", lambda p: bspump.MemorySource(app, p, events=[{"cc": "cz"}, {"cc": "xx"}]),
                    lambda p: Enrich(app, p), lambda p: bspump.MemorySink(app, p))
    assert await run_app(app) == 0
    assert [e["country"] for e in p.sink.events] == ["Czechia", "unknown"]
    assert lookup.loads == 1 and "cz" in lookup and lookup["de"] == "Germany" and len(lookup) == 2


async def test_lookup_refresh_and_failing_load(app: bspump.BSPumpApplication, svc: bspump.PumpService) -> None:
    lookup = svc.add_lookup(CountryLookup(app, "Countries", config={"refresh": "20ms"}))
    await lookup.start()
    await asyncio.sleep(0.1)
    await lookup.stop()
    assert lookup.loads >= 3

    class Broken(bspump.Lookup):
        async def load(self) -> Mapping[str, str]:
            raise OSError("table missing")

    app2 = make_app()
    app2.get_service("bspump.PumpService").add_lookup(Broken(app2, "Geo"))
    with pytest.raises(RuntimeError, match="lookup 'Geo' failed to load: OSError: table missing"):
        await run_app(app2)


def test_unknown_lookup_lists_known(app: bspump.BSPumpApplication, svc: bspump.PumpService) -> None:
    svc.add_lookup(CountryLookup(app, "Countries"))
    with pytest.raises(bspump.UnknownIdError, match="known lookup IDs: 'Countries'"):
        svc.locate_lookup("Cuntries")


# -- locate -----------------------------------------------------------------------------------------------
def test_locate(app: bspump.BSPumpApplication, svc: bspump.PumpService) -> None:
    lookup = svc.add_lookup(CountryLookup(app, "Countries"))
    p = pipeline_of(app, "Events", lambda p: bspump.MemorySource(app, p), lambda p: AddField(app, p),
                    lambda p: bspump.MemorySink(app, p, id="OutSink"))
    assert svc.locate("Events") is p
    assert svc.locate("Events.*Sink") is p.sink
    assert svc.locate("Events.AddField") is p.processors[0]
    assert svc.locate("Ev*") is p
    assert svc.locate("Countries") is lookup
    assert svc.locate("Nope.*") is None
    assert p.locate("OutSink") is p.sink and p.locate("nothing") is None
    assert p.sink.qualified_id == "Events.OutSink"
