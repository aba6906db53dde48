"""CachedLookup (whole or on demand, TTL, LRU) and the processors' async prepare() hook that fills it
once per batch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from conftest import make_app, run_app

import bspump
from bspump import cached_lookup

USERS = {1: "ann", 2: "bob", 3: "cid", 4: "dee"}


class UserLookup(bspump.CachedLookup):
    """A user table queried by id; records every query it answers."""

    def __init__(self, *args: Any, table: Mapping[int, str] = USERS, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.table = dict(table)
        self.queries_seen: list[list[int]] = []
        self.down = False

    async def load(self) -> Mapping[Any, Any]:
        return dict(self.table)

    async def fetch(self, keys: Sequence[Any]) -> Mapping[Any, Any]:
        if self.down:
            raise ConnectionRefusedError("user database unreachable")
        self.queries_seen.append(list(keys))
        return {key: self.table[key] for key in keys if key in self.table}


class FetchOnly(bspump.CachedLookup):
    async def fetch(self, keys: Sequence[Any]) -> Mapping[Any, Any]:
        return {}


def on_demand(app: bspump.BSPumpApplication, **config: Any) -> UserLookup:
    return UserLookup(app, "Users", config={"mode": "on_demand", **config})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(cached_lookup.time, "monotonic", fake)
    return fake


# -- the lookup alone -------------------------------------------------------------------------------------
async def test_prefetch_queries_only_missing_keys_once_each_in_chunks() -> None:
    lookup = on_demand(make_app(), fetch_batch="2")
    await lookup.start()
    await lookup.prefetch([1, 2, 2, 3, 9])
    assert lookup.queries_seen == [[1, 2], [3, 9]]
    assert (lookup[1], lookup.get(3), lookup.get(9, "none")) == ("ann", "cid", "none")
    await lookup.prefetch([1, 9, 4])  # 9 is known to be absent: not queried again
    assert lookup.queries_seen[-1] == [4]
    assert 9 not in lookup and 4 in lookup and len(lookup) == 4
    with pytest.raises(KeyError):
        lookup[9]


async def test_entries_expire_after_ttl_and_are_queried_again(clock: Clock) -> None:
    lookup = on_demand(make_app(), ttl="30s")
    await lookup.start()
    await lookup.prefetch([1])
    lookup.table[1] = "anne"
    clock.now += 29
    await lookup.prefetch([1])
    assert lookup[1] == "ann" and len(lookup.queries_seen) == 1
    clock.now += 2
    assert 1 not in lookup  # expired: a synchronous read does not see stale data
    assert await lookup.aget(1) == "anne"
    assert len(lookup.queries_seen) == 2


async def test_least_recently_used_entries_are_evicted_beyond_max_entries() -> None:
    lookup = on_demand(make_app(), max_entries="2")
    await lookup.start()
    await lookup.prefetch([1, 2])
    assert lookup[1] == "ann"  # 1 is now more recent than 2
    await lookup.prefetch([3])
    assert list(lookup) == [1, 3]


async def test_a_failed_query_raises_and_leaves_the_cache_as_it_was() -> None:
    lookup = on_demand(make_app())
    await lookup.start()
    await lookup.prefetch([1])
    lookup.down = True
    with pytest.raises(ConnectionRefusedError):
        await lookup.prefetch([2])
    assert list(lookup) == [1] and 2 not in lookup


async def test_whole_mode_loads_everything_and_never_queries() -> None:
    lookup = UserLookup(make_app(), "Users")
    await lookup.start()
    await lookup.prefetch([1, 99])
    assert lookup.queries_seen == [] and lookup[4] == "dee" and len(lookup) == 4 and 99 not in lookup


def test_preflight_refuses_a_mode_the_subclass_does_not_implement() -> None:
    lookup = FetchOnly(make_app(), "Fetcher")  # default mode: whole, which it cannot do
    with pytest.raises(bspump.ConfigError, match=r"\[lookup:Fetcher\] mode.*does not support 'whole'.*on_demand"):
        lookup.preflight()
    FetchOnly(make_app(), "Fetcher", config={"mode": "on-demand"}).preflight()


# -- prepare() in a pipeline ------------------------------------------------------------------------------
class Doubler(bspump.Processor):
    def process(self, context: dict[str, Any], event: Any) -> Any:
        return {"user": event["user"] * 2 if event["user"] < 3 else event["user"]}


class Enrich(bspump.Processor):
    """Adds the user's name; the names of a batch are fetched in one query by prepare()."""

    def __init__(self, *args: Any, lookup: UserLookup, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lookup = lookup
        self.prepared: list[list[Any]] = []

    async def prepare(self, events: Sequence[Any]) -> None:
        self.prepared.append([event["user"] for event in events])
        await self.lookup.prefetch(event["user"] for event in events)

    def process(self, context: dict[str, Any], event: Any) -> Any:
        return {**event, "name": self.lookup[event["user"]]}


def enrich_pipeline(app: bspump.BSPumpApplication, batches: list[list[Any]], config: dict[str, Any],
                    per_event_contexts: bool) -> tuple[bspump.Pipeline, Enrich, UserLookup]:
    lookup = on_demand(app)
    app.get_service("bspump.PumpService").add_lookup(lookup)

    class Source(bspump.Source):
        async def main(self) -> None:
            for batch in batches:
                if per_event_contexts:
                    await self.emit(batch, contexts=[{"offset": i} for i in range(len(batch))])
                else:
                    await self.emit(batch, {"source": "test"})

    pipeline = bspump.Pipeline(app, "P", config={"retry_backoff": "1ms", "retry_backoff_max": "2ms", **config})
    enrich = Enrich(app, pipeline, lookup=lookup)
    pipeline.build(Source(app, pipeline), Doubler(app, pipeline), enrich, bspump.MemorySink(app, pipeline))
    app.get_service("bspump.PumpService").add_pipeline(pipeline)
    return pipeline, enrich, lookup


@pytest.mark.parametrize("per_event_contexts", [False, True], ids=["shared-context", "per-event-contexts"])
async def test_prepare_sees_the_batch_as_it_reaches_the_processor_and_queries_once_per_batch(
        per_event_contexts: bool) -> None:
    app = make_app()
    batches = [[{"user": 1}, {"user": 2}, {"user": 1}], [{"user": 3}, {"user": 2}]]
    pipeline, enrich, lookup = enrich_pipeline(app, batches, {}, per_event_contexts)
    assert await run_app(app) == 0
    assert enrich.prepared == [[2, 4, 2], [3, 4]]  # after Doubler, not the source's events
    assert lookup.queries_seen == [[2, 4], [3]]  # one query per batch, cached keys left out
    assert pipeline.sink.events == [{"user": 2, "name": "bob"}, {"user": 4, "name": "dee"},
                                    {"user": 2, "name": "bob"}, {"user": 3, "name": "cid"},
                                    {"user": 4, "name": "dee"}]


async def test_a_failing_prepare_lets_each_event_meet_the_error_policy(caplog: pytest.LogCaptureFixture) -> None:
    app = make_app()
    batches = [[{"user": 1}, {"user": 3}]]
    lookup = on_demand(app)
    lookup.down = True

    class Source(bspump.Source):
        async def main(self) -> None:
            await self.emit(batches[0], {"source": "test"})

    pipeline = bspump.Pipeline(app, "P", config={"error_policy": "dead-letter"})
    dead = bspump.MemorySink(app, pipeline, id="DL")
    pipeline.build(Source(app, pipeline), Enrich(app, pipeline, lookup=lookup), bspump.MemorySink(app, pipeline),
                   dead_letter=dead)
    app.get_service("bspump.PumpService").add_pipeline(pipeline)
    app.get_service("bspump.PumpService").add_lookup(lookup)
    assert await run_app(app) == 0
    assert pipeline.sink.events == []
    assert dead.events == [{"user": 1}, {"user": 3}]  # nothing lost: both dead-lettered with the KeyError
    assert "prepare() failed" in caplog.text and "user database unreachable" in caplog.text
    assert pipeline.metrics()["errors"] == 2


async def test_events_recovered_by_retry_are_prepared_before_the_later_processor() -> None:
    app = make_app()

    class FlakyOnce(bspump.Processor):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.seen: set[int] = set()

        def process(self, context: dict[str, Any], event: Any) -> Any:
            if event["user"] == 4 and 4 not in self.seen:
                self.seen.add(4)
                raise TimeoutError("busy")
            return event

    lookup = on_demand(app)
    app.get_service("bspump.PumpService").add_lookup(lookup)

    class Source(bspump.Source):
        async def main(self) -> None:
            await self.emit([{"user": 1}, {"user": 4}], {"source": "test"})

    pipeline = bspump.Pipeline(app, "P", config={"error_policy": "retry", "retry_backoff": "1ms"})
    enrich = Enrich(app, pipeline, lookup=lookup)
    pipeline.build(Source(app, pipeline), FlakyOnce(app, pipeline), enrich, bspump.MemorySink(app, pipeline))
    app.get_service("bspump.PumpService").add_pipeline(pipeline)
    assert await run_app(app) == 0
    assert enrich.prepared == [[1], [4]]  # the retried event was prepared on its own
    assert pipeline.sink.events == [{"user": 1, "name": "ann"}, {"user": 4, "name": "dee"}]
