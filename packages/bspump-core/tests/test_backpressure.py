"""Backpressure: a slow sink throttles an infinite fast source; in-flight events and memory stay bounded."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from typing import Any

from conftest import CountingSource, make_app, run_app, wait_for

import bspump


class PayloadSource(CountingSource):
    """Fast, endless, and every event carries a fresh ~200-byte payload (like a real log line)."""

    async def main(self) -> None:
        n = 0
        while True:
            events = [{"n": i, "line": f"{i:010d} GET /index.html HTTP/1.1 200 " + "x" * 150}
                      for i in range(n, n + self.batch_size)]
            await self.emit(events, {"source": "payload"})
            n += self.batch_size
            self.emitted += self.batch_size
            await asyncio.sleep(0)


class CountingSlowSink(bspump.AsyncSink):
    """Slow and keeps nothing, so any memory growth would come from the framework's queues."""

    def __init__(self, *args: Any, delay: float = 0.001, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.delay = delay
        self.count = 0

    async def write(self, batch: bspump.Batch) -> None:
        await asyncio.sleep(self.delay)
        self.count += len(batch)


async def test_in_flight_is_bounded_and_the_source_pauses() -> None:
    app = make_app()
    max_in_flight, batch_size = 100, 10
    p = bspump.Pipeline(app, "P", config={"max_in_flight": max_in_flight})
    p.build(CountingSource(app, p, batch_size=batch_size), CountingSlowSink(app, p, delay=0.002))
    app.get_service("bspump.PumpService").add_pipeline(p)
    source, sink = p.sources[0], p.sink
    samples: list[tuple[int, int, bool]] = []

    async def sample() -> None:
        while True:
            samples.append((p.in_flight, source.emitted - sink.count, "in flight" in p.throttles))
            await asyncio.sleep(0)

    runner = asyncio.create_task(run_app(app))
    sampler = asyncio.create_task(sample())
    await wait_for(lambda: sink.count >= 1000)
    sampler.cancel()
    app.stop()
    assert await runner == 0
    assert max(s[0] for s in samples) <= max_in_flight + batch_size
    assert max(s[1] for s in samples) <= max_in_flight + batch_size, "the source ran ahead of the sink"
    assert any(s[2] for s in samples), "the pipeline never throttled its source"
    assert max(s[0] for s in samples) >= max_in_flight  # the bound was actually reached
    assert source.emitted == sink.count  # and the stop drained it


async def test_memory_stays_flat_however_long_a_slow_sink_runs() -> None:
    app = make_app()
    p = bspump.Pipeline(app, "P", config={"max_in_flight": 500})
    p.build(PayloadSource(app, p, batch_size=50), CountingSlowSink(app, p, delay=0.0005))
    app.get_service("bspump.PumpService").add_pipeline(p)
    source, sink = p.sources[0], p.sink
    gc.collect()
    tracemalloc.start()
    try:
        runner = asyncio.create_task(run_app(app))
        n = 5_000
        await wait_for(lambda: sink.count >= n, timeout=20)
        _, peak_n = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        await wait_for(lambda: sink.count >= 5 * n, timeout=20)
        _, peak_5n = tracemalloc.get_traced_memory()
        produced = source.emitted
        app.stop()
        assert await runner == 0
    finally:
        tracemalloc.stop()
    per_event = 250  # bytes a payload event needs at least; unbounded buffering would hold ~all of them
    assert produced >= 5 * n
    assert peak_5n < peak_n * 2 + 512 * 1024, (peak_n, peak_5n)
    assert peak_5n < produced * per_event / 4, (peak_5n, produced)
    assert source.emitted == sink.count
