"""Events -> ElasticSearchSink, against a hand-written ``helpers.async_streaming_bulk`` loop, same server, same run.

bspump: ``MemorySource`` (batches of ``--chunk`` events) -> ``ElasticSearchSink`` (``bulk_max_actions`` =
``--chunk``, ``concurrency`` = ``--concurrency``), acknowledging each event once the cluster confirmed it.

Baseline: what one writes by hand with the same client: ``--concurrency`` tasks, each running
``elasticsearch.helpers.async_streaming_bulk`` over its share of the events with ``chunk_size`` = ``--chunk``
(the helper has no concurrency of its own; this is how it is run in parallel), counting the items it reports
as written (``raise_on_error=False``, so that neither side stops at an error).

Both write the same ~120-byte JSON documents without ``_id`` (the cluster generates ids) into a fresh index of
one shard and no replica; each contestant runs ``--rounds`` times, interleaved, and the best run counts. The
server is found through BSPUMP_TEST_ELASTICSEARCH_URL (default http://127.0.0.1:9200). Run it under the
machine-wide lock of the test servers:

    flock /tmp/bspump-integration.lock python benchmarks/elasticsearch_sink.py [--events 200000] [--rounds 3]

The last line printed is JSON: ``{"bspump_eps", "baseline_eps", "ratio", "events", "chunk", "concurrency",
"rounds"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import time
import uuid
from typing import Any

from elasticsearch import AsyncElasticsearch
from elasticsearch.helpers import async_streaming_bulk

import bspump
import bspump.elasticsearch
from bspump.testing import make_app

URL = os.environ.get("BSPUMP_TEST_ELASTICSEARCH_URL", "http://127.0.0.1:9200")
SETTINGS = {"number_of_shards": 1, "number_of_replicas": 0}
MAPPINGS = {"properties": {"n": {"type": "long"}, "level": {"type": "keyword"}, "message": {"type": "text"},
                           "@timestamp": {"type": "date"}}}


def make_events(count: int) -> list[dict[str, Any]]:
    return [{"n": n, "level": ("info", "warn", "error")[n % 3], "message": f"request {n} served in {n % 97} ms",
             "@timestamp": 1_780_000_000_000 + n} for n in range(count)]


async def fresh_index(es: AsyncElasticsearch, label: str) -> str:
    name = f"bench-{label}-{uuid.uuid4().hex[:8]}"
    await es.indices.create(index=name, settings=SETTINGS, mappings=MAPPINGS)
    return name


async def count_of(es: AsyncElasticsearch, index: str) -> int:
    await es.indices.refresh(index=index)
    return int((await es.count(index=index))["count"])


async def run_bspump(events: list[dict[str, Any]], index: str, chunk: int, concurrency: int) -> float:
    app = make_app()
    app.get_service("bspump.PumpService").add_connection(
        bspump.elasticsearch.ElasticSearchConnection(app, "ESConnection", config={"url": URL}))
    pipeline = bspump.Pipeline(app, "Bench", config={"max_in_flight": chunk * concurrency * 2})
    sink = bspump.elasticsearch.ElasticSearchSink(app, pipeline, connection="ESConnection", config={
        "index": index, "bulk_max_actions": chunk, "concurrency": concurrency})
    pipeline.build(bspump.MemorySource(app, pipeline, events=events, config={"batch_size": chunk}), sink)
    app.pump_service.add_pipeline(pipeline)
    connection = app.pump_service.connections["ESConnection"]
    await connection.open()
    await connection.wait_ready(30)  # connecting is not what is measured
    started = time.perf_counter()
    code = await app.run_async()
    elapsed = time.perf_counter() - started
    if code != 0 or pipeline.metrics()["out"] != len(events):
        raise SystemExit(f"bspump run failed: exit code {code}, {pipeline.metrics()}")
    return elapsed


async def run_baseline(events: list[dict[str, Any]], index: str, chunk: int, concurrency: int) -> float:
    async with AsyncElasticsearch(URL, request_timeout=30, connections_per_node=max(10, concurrency)) as es:
        await es.cluster.health()
        written = 0

        async def stream(share: list[dict[str, Any]]) -> None:
            nonlocal written
            actions = ({"_index": index, "_source": event} for event in share)
            async for ok, _ in async_streaming_bulk(es, actions, chunk_size=chunk, raise_on_error=False,
                                                    raise_on_exception=False):
                written += ok

        shares = [events[i::concurrency] for i in range(concurrency)]
        started = time.perf_counter()
        await asyncio.gather(*(stream(share) for share in shares))
        elapsed = time.perf_counter() - started
    if written != len(events):
        raise SystemExit(f"baseline wrote {written} of {len(events)}")
    return elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    events = make_events(args.events)
    best: dict[str, float] = {}
    runs = {"baseline (async_streaming_bulk)": run_baseline, "bspump (ElasticSearchSink)": run_bspump}
    async with AsyncElasticsearch(URL, request_timeout=120) as es:
        await es.cluster.health(wait_for_status="yellow")
        for round_no in range(args.rounds):
            for label, run in runs.items():  # interleaved: a slower phase of the machine favours neither side
                index = await fresh_index(es, label.split()[0])
                try:
                    elapsed = await run(events, index, args.chunk, args.concurrency)
                    stored = await count_of(es, index)
                finally:
                    await es.indices.delete(index=index, ignore_unavailable=True)
                if stored != len(events):
                    raise SystemExit(f"{label}: {stored} documents stored for {len(events)} events")
                eps = len(events) / elapsed
                best[label] = max(best.get(label, 0.0), eps)
                print(f"{label + f' #{round_no + 1}':<36} {len(events):>8} events in {elapsed:6.2f} s = "
                      f"{eps:>9,.0f} events/s", flush=True)
    bspump_eps, baseline_eps = best["bspump (ElasticSearchSink)"], best["baseline (async_streaming_bulk)"]
    print(json.dumps({"bspump_eps": round(bspump_eps), "baseline_eps": round(baseline_eps),
                      "ratio": round(bspump_eps / baseline_eps, 3), "events": args.events, "chunk": args.chunk,
                      "concurrency": args.concurrency, "rounds": args.rounds}))


if __name__ == "__main__":
    asyncio.run(main())
