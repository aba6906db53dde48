"""Core throughput: source -> 3 trivial processors -> null sink, against a plain Python loop.

Both sides make the same three calls per event (add a field, filter, rename a key) over freshly
built events, in the same run; the last line is JSON with ``bspump_eps``, ``baseline_eps`` and
``ratio``. Target: ratio >= 0.5.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
from typing import Any

import bspump


def add_field(event: dict[str, Any]) -> dict[str, Any]:
    event["seen"] = True
    return event


def keep(event: dict[str, Any]) -> dict[str, Any] | None:
    return event if event["n"] % 10 else None


def rename(event: dict[str, Any]) -> dict[str, Any]:
    event["message"] = event.pop("msg")
    return event


class AddField(bspump.Processor):
    def process(self, context: bspump.Context, event: Any) -> Any:
        event["seen"] = True
        return event


class Filter(bspump.Processor):
    def process(self, context: bspump.Context, event: Any) -> Any:
        return event if event["n"] % 10 else None


class Rename(bspump.Processor):
    def process(self, context: bspump.Context, event: Any) -> Any:
        event["message"] = event.pop("msg")
        return event


def make_events(count: int) -> list[dict[str, Any]]:
    return [{"n": i, "msg": "GET /index.html 200"} for i in range(count)]


def run_baseline(events: list[dict[str, Any]]) -> int:
    written = 0
    for event in events:
        event = add_field(event)
        event = keep(event)
        if event is None:
            continue
        event = rename(event)
        written += 1
    return written


class BenchPipeline(bspump.Pipeline):
    def __init__(self, app: bspump.BSPumpApplication, pipeline_id: str, events: list[Any], batch: int) -> None:
        super().__init__(app, pipeline_id, config={"max_in_flight": 100_000})
        self.build(
            bspump.MemorySource(app, self, events=events, config={"batch_size": batch}),
            AddField(app, self),
            Filter(app, self),
            Rename(app, self),
            bspump.NullSink(app, self),
        )


def run_bspump(events: list[dict[str, Any]], batch: int) -> tuple[int, float]:
    app = bspump.BSPumpApplication(load_plugins=False)
    pipeline = BenchPipeline(app, "Bench", events, batch)
    app.pump_service.add_pipeline(pipeline)
    started = time.perf_counter()
    asyncio.run(app.run_async())
    elapsed = time.perf_counter() - started
    assert isinstance(pipeline.sink, bspump.NullSink)
    return pipeline.sink.count, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    best_base = best_pump = float("inf")
    for round_no in range(args.rounds):
        gc.collect()
        events = make_events(args.events)
        started = time.perf_counter()
        expected = run_baseline(events)
        base = time.perf_counter() - started
        gc.collect()
        events = make_events(args.events)
        written, pump = run_bspump(events, args.batch)
        if written != expected:
            raise SystemExit(f"bspump wrote {written} events, the baseline {expected}")
        best_base, best_pump = min(best_base, base), min(best_pump, pump)
        print(f"round {round_no + 1}: baseline {args.events / base:,.0f} ev/s, bspump {args.events / pump:,.0f} ev/s")
    result = {
        "events": args.events,
        "batch": args.batch,
        "baseline_eps": round(args.events / best_base),
        "bspump_eps": round(args.events / best_pump),
        "ratio": round(best_base / best_pump, 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
