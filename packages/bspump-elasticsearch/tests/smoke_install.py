"""Smoke test of an installed bspump-elasticsearch wheel (run by ``nox -s wheel_install``, not by pytest).

Runs in a venv holding only bspump-core and bspump-elasticsearch from their wheels: a pipeline indexes events
into a new index through ``ElasticSearchSink``, a second reads them back through ``ElasticSearchSource``, and
both must agree. It needs a server (``BSPUMP_TEST_ELASTICSEARCH_URL``, default http://127.0.0.1:9200); without
one it exits 77 (skipped).
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid

from elasticsearch import AsyncElasticsearch, TransportError

import bspump
import bspump.elasticsearch
from bspump.testing import run_app

SKIPPED = 77
EVENTS = [{"n": n, "item": f"item-{n}"} for n in range(50)]


def application(url: str) -> bspump.BSPumpApplication:
    app = bspump.BSPumpApplication(load_plugins=False)
    app.get_service("bspump.PumpService").add_connection(
        bspump.elasticsearch.ElasticSearchConnection(app, "ElasticSearchConnection", config={"url": url}))
    return app


async def run(app: bspump.BSPumpApplication, pipeline: bspump.Pipeline) -> None:
    app.get_service("bspump.PumpService").add_pipeline(pipeline)
    assert await run_app(app, timeout=120) == 0, f"pipeline {pipeline.id} failed"


async def main() -> int:
    url = os.environ.get("BSPUMP_TEST_ELASTICSEARCH_URL", "http://127.0.0.1:9200")
    async with AsyncElasticsearch(url, request_timeout=5) as es:
        try:
            await es.cluster.health()
        except (TransportError, OSError):
            print(f"skipped: no Elasticsearch answers at {url} (BSPUMP_TEST_ELASTICSEARCH_URL)")
            return SKIPPED
        print(f"bspump {bspump.__version__}; bspump.elasticsearch from "
              f"{os.path.dirname(bspump.elasticsearch.__file__)}")
        index = f"bspump-smoke-{uuid.uuid4().hex[:8]}"
        try:
            app = application(url)
            writer = bspump.Pipeline(app, "Write")
            writer.build(bspump.MemorySource(app, writer, events=[dict(e) for e in EVENTS]),
                         bspump.elasticsearch.ElasticSearchSink(app, writer, config={
                             "index": index, "id_field": "n", "refresh": "true"}))
            await run(app, writer)

            app = application(url)
            reader = bspump.Pipeline(app, "Read")
            sink = bspump.MemorySink(app, reader)
            reader.build(bspump.elasticsearch.ElasticSearchSource(app, reader, config={
                "index": index, "sort_field": "n"}), sink)
            await run(app, reader)
        finally:
            await es.options(ignore_status=404).indices.delete(index=index)
    received = [{"n": e["n"], "item": e["item"]} for e in sink.events]
    if received != EVENTS:
        print(f"error: indexed {len(EVENTS)} documents, read back {len(received)} that differ", file=sys.stderr)
        return 1
    print(f"ok: {len(EVENTS)} documents through ElasticSearchSink and back through ElasticSearchSource ({index})")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
