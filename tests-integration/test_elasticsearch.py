"""ElasticSearchSink against the real Elasticsearch: mapping errors, per-item 429s, a server restart mid-stream.

Per-item 429s are injected by :class:`RejectingProxy`, a transparent HTTP proxy in front of the real server:
for each bulk request it takes some actions out of the body before forwarding it (so the server never sees
them, exactly as when a write thread pool rejects them) and puts a 429 ``es_rejected_execution_exception``
item in their place in the server's real response. Every other byte comes from the server.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from elasticsearch import ApiError, AsyncElasticsearch

import bspump
import bspump.elasticsearch
from bspump import context as keys
from bspump.testing import make_app, run_app, wait_for

pytestmark = [pytest.mark.elasticsearch]

MAPPINGS = {"properties": {"n": {"type": "integer"}, "text": {"type": "keyword"}}}


class CountingSource(bspump.Source):
    """Emits ``{"n": i}`` for i in range(count), in batches, each event with a Kafka-like position."""

    def __init__(self, *args: Any, count: int, batch: int = 100, pause: float = 0.0, stamped: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.count, self.batch, self.pause, self.stamped = count, batch, pause, stamped
        self.emitted = 0

    async def main(self) -> None:
        for start in range(0, self.count, self.batch):
            numbers = range(start, min(start + self.batch, self.count))
            stamp = {"@timestamp": 1_780_000_000_000} if self.stamped else {}
            await self.emit([{"n": n, "text": f"event {n}", **stamp} for n in numbers],
                            contexts=[{keys.SOURCE: "counting", keys.TOPIC: "t", keys.PARTITION: 0, keys.OFFSET: n}
                                      for n in numbers])
            self.emitted = numbers.stop
            await asyncio.sleep(self.pause)


@pytest_asyncio.fixture
async def index(elasticsearch_url: str, es_index: str) -> AsyncIterator[str]:
    async with AsyncElasticsearch(elasticsearch_url) as es:
        await es.indices.create(index=es_index, mappings=MAPPINGS)
    yield es_index


async def stored(url: str, index: str) -> list[int]:
    """The ``n`` of every document of ``index`` (duplicates included)."""
    async with AsyncElasticsearch(url, request_timeout=60) as es:
        await es.indices.refresh(index=index)
        found = await es.search(index=index, size=10000, query={"match_all": {}}, source=["n"])
        return [hit["_source"]["n"] for hit in found["hits"]["hits"]]


def build(url: str, index: str, count: int, policy: str = "dead-letter", pause: float = 0.0,
          batch: int = 100, stamped: bool = False, **sink: Any) -> tuple[bspump.BSPumpApplication, bspump.Pipeline]:
    app = make_app()
    app.get_service("bspump.PumpService").add_connection(bspump.elasticsearch.ElasticSearchConnection(
        app, "ESConnection", config={"url": url, "reconnect_initial": 0.1, "reconnect_max": 1.0}))
    pipeline = bspump.Pipeline(app, "P", config={"error_policy": policy, "retry_backoff": "20ms",
                                                 "retry_backoff_max": "500ms", "max_in_flight": 2000})
    pipeline.build(CountingSource(app, pipeline, count=count, pause=pause, batch=batch, stamped=stamped),
                   bspump.elasticsearch.ElasticSearchSink(app, pipeline, connection="ESConnection",
                                                          config={"index": index, **sink}),
                   dead_letter=bspump.MemorySink(app, pipeline, id="DeadLetters") if policy == "dead-letter" else None)
    app.pump_service.add_pipeline(pipeline)
    return app, pipeline


async def test_mapping_errors_dead_letter_the_bad_items_and_write_the_rest(elasticsearch_url: str, index: str) -> None:
    app = make_app()
    app.get_service("bspump.PumpService").add_connection(
        bspump.elasticsearch.ElasticSearchConnection(app, "ESConnection", config={"url": elasticsearch_url}))
    pipeline = bspump.Pipeline(app, "P", config={"error_policy": "dead-letter"})
    events = [{"n": i} if i % 4 else {"n": f"bad {i}"} for i in range(40)]
    letters = bspump.MemorySink(app, pipeline, id="DeadLetters")
    pipeline.build(bspump.MemorySource(app, pipeline, events=events, config={"batch_size": 40}),
                   bspump.elasticsearch.ElasticSearchSink(app, pipeline, connection="ESConnection",
                                                          config={"index": index}), dead_letter=letters)
    app.pump_service.add_pipeline(pipeline)
    assert await run_app(app, timeout=60) == 0
    assert sorted(await stored(elasticsearch_url, index)) == [i for i in range(40) if i % 4]
    assert letters.events == [{"n": f"bad {i}"} for i in range(0, 40, 4)]
    error = letters.contexts[0][keys.ERROR]
    assert error.startswith("BulkItemError: 400 document_parsing_exception: ") and "failed to parse field [n]" in error
    assert pipeline.metrics()["out"] == 30


class RejectingProxy:
    """HTTP proxy to the real server that rejects a share of each bulk request's actions with 429 (see the
    module documentation); ``rejected`` counts them."""

    def __init__(self, upstream: str, share: float, seed: int = 7) -> None:
        self.upstream = upstream
        self.share = share
        self.random = random.Random(seed)
        self.rejected = 0
        self.bulks = 0
        self.server: asyncio.Server | None = None
        self.session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> RejectingProxy:
        self.session = aiohttp.ClientSession()
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None and self.session is not None
        self.server.close()
        await self.server.wait_closed()
        await self.session.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                method, target, _ = head[0].split(" ", 2)
                headers = {k.strip(): v.strip() for k, _, v in (h.partition(":") for h in head[1:] if h)}
                body = await reader.readexactly(int({k.lower(): v for k, v in headers.items()}
                                                    .get("content-length", "0")))
                status, content_type, payload = await self._forward(method, target, headers, body)
                writer.write(f"HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\n"
                             f"x-elastic-product: Elasticsearch\r\ncontent-length: {len(payload)}\r\n\r\n"
                             .encode() + payload)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _forward(self, method: str, target: str, headers: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
        path = urllib.parse.urlsplit(target).path
        rejected: list[tuple[int, str]] = []
        if path.endswith("/_bulk"):
            self.bulks += 1
            body, rejected = self._take_out(body)
        keep = {k: v for k, v in headers.items() if k.lower() in ("content-type", "accept")}
        assert self.session is not None
        if rejected and not body:  # everything rejected: answer without the server
            status, content_type, payload = 200, "application/json", b'{"errors":false,"items":[]}'
        else:
            async with self.session.request(method, self.upstream + target, data=body, headers=keep) as response:
                status, content_type = response.status, response.headers.get("content-type", "application/json")
                payload = await response.read()
        if rejected and status == 200:
            answer = json.loads(payload)
            items = answer.get("items", [])
            for position, op in rejected:
                items.insert(position, {op: {"status": 429, "error": {
                    "type": "es_rejected_execution_exception",
                    "reason": "rejected execution of TransportShardBulkAction (injected by the test proxy)"}}})
            answer["items"], answer["errors"] = items, True
            payload = json.dumps(answer).encode()
        return status, content_type, payload

    def _take_out(self, body: bytes) -> tuple[bytes, list[tuple[int, str]]]:
        lines = body.splitlines(keepends=True)
        kept: list[bytes] = []
        rejected: list[tuple[int, str]] = []
        position = i = 0
        while i < len(lines):
            action = json.loads(lines[i])
            (op,) = action
            size = 1 if op == "delete" else 2
            if self.random.random() < self.share:
                rejected.append((position, op))
                self.rejected += 1
            else:
                kept.extend(lines[i:i + size])
            position += 1
            i += size
        return b"".join(kept), rejected


async def test_injected_item_429s_end_with_every_document_exactly_once(elasticsearch_url: str, index: str) -> None:
    async with RejectingProxy(elasticsearch_url, share=0.3) as proxy:
        app, pipeline = build(proxy.url, index, 3000, bulk_max_actions=250, concurrency=4)
        assert await run_app(app, timeout=90) == 0
    numbers = await stored(elasticsearch_url, index)
    assert len(numbers) == 3000 and sorted(numbers) == list(range(3000))
    assert proxy.rejected > 500  # each retry round rejects 30% again: many rounds for some items
    letters = pipeline.dead_letter_sink
    assert isinstance(letters, bspump.MemorySink) and not letters.events
    assert pipeline.metrics()["out"] == 3000


@pytest.mark.server_control
async def test_server_restart_mid_stream_loses_nothing_and_duplicates_nothing(
        elasticsearch_url: str, index: str, server_control: Any) -> None:
    """Elasticsearch is stopped while events flow, then started again; the stream goes on, then the pipeline
    stops gracefully: every event the source emitted is in the index exactly once (ids from positions),
    nothing was dead-lettered."""
    app, pipeline = build(elasticsearch_url, index, 10**9, pause=0.01, bulk_max_actions=200)
    source, sink = pipeline.sources[0], pipeline.sink
    assert isinstance(source, CountingSource)
    task = asyncio.create_task(run_app(app, timeout=120))

    async def written(count: int) -> int:
        while pipeline.metrics()["out"] < count:
            assert not task.done(), task.result()
            await asyncio.sleep(0.01)
        return int(pipeline.metrics()["out"])

    await written(1500)
    await asyncio.to_thread(server_control.stop, "elasticsearch")
    before = pipeline.metrics()["out"]
    await asyncio.to_thread(server_control.start, "elasticsearch")
    await written(before + 1500)
    app.stop()
    assert await task == 0
    numbers = await stored(elasticsearch_url, index)
    letters = pipeline.dead_letter_sink
    assert isinstance(letters, bspump.MemorySink)
    assert not letters.events, f"{len(letters.events)} dead letters, the first: {letters.contexts[0]}"
    assert sorted(numbers) == list(range(source.emitted)), f"{len(numbers)} documents for {source.emitted} events"
    assert isinstance(sink, bspump.elasticsearch.ElasticSearchSink)
    assert sink.request_errors > 0  # writes really failed while the server was down


async def feed(url: str, index: str, numbers: range) -> None:
    async with AsyncElasticsearch(url) as es:
        body = b"".join(b'{"index":{}}\n' + json.dumps({"n": n, "text": f"event {n:06d}"}).encode() + b"\n"
                        for n in numbers)
        await es.bulk(index=index, operations=body, refresh="true")  # type: ignore[arg-type]


async def test_source_follows_new_documents_and_resumes_after_them(elasticsearch_url: str, index: str,
                                                                   tmp_path: Any) -> None:
    """``follow``: the source reads what is there, then what is added later; a second run started afterwards
    reads only what was added after the first run's acknowledged position."""
    await feed(elasticsearch_url, index, range(0, 120))

    def build_reader() -> tuple[bspump.BSPumpApplication, bspump.MemorySink]:
        app = make_app(environ={"BSPUMP_STATE_DIR": str(tmp_path)})
        app.get_service("bspump.PumpService").add_connection(bspump.elasticsearch.ElasticSearchConnection(
            app, "ESConnection", config={"url": elasticsearch_url}))
        pipeline = bspump.Pipeline(app, "Reader")
        sink = bspump.MemorySink(app, pipeline, id="Received")
        pipeline.build(bspump.elasticsearch.ElasticSearchSource(app, pipeline, connection="ESConnection", config={
            "index": index, "sort_field": "n", "tiebreaker_field": "text", "batch_size": 50, "follow": True,
            "poll_interval": "50ms", "commit_interval": "50ms"}), sink)
        app.pump_service.add_pipeline(pipeline)
        return app, sink

    app, sink = build_reader()
    task = asyncio.create_task(app.run_async())
    await wait_for(lambda: len(sink.events) >= 120, 30, what="the first 120 documents")
    await feed(elasticsearch_url, index, range(120, 200))
    await wait_for(lambda: len(sink.events) >= 200, 30, what="the documents added later")
    app.stop()
    assert await asyncio.wait_for(task, 30) == 0
    assert [e["n"] for e in sink.events] == list(range(200))
    context = sink.contexts[0]
    assert context[keys.TOPIC] == index and context[keys.KEY] and context[keys.OFFSET][:2] == [0, "event 000000"]

    await feed(elasticsearch_url, index, range(200, 230))
    app, sink = build_reader()
    task = asyncio.create_task(app.run_async())
    await wait_for(lambda: len(sink.events) >= 30, 30, what="the documents added after the first run")
    app.stop()
    assert await asyncio.wait_for(task, 30) == 0
    assert [e["n"] for e in sink.events] == list(range(200, 230))


async def test_lookup_by_id_by_field_and_whole(elasticsearch_url: str, index: str) -> None:
    async with AsyncElasticsearch(elasticsearch_url) as es:
        await es.indices.put_mapping(index=index, properties={"code": {"type": "keyword"}})
        for n in range(30):
            await es.index(index=index, id=f"id-{n}", document={"n": n, "code": f"C{n}", "text": "x"})
        await es.indices.refresh(index=index)
    app = make_app()
    connection = bspump.elasticsearch.ElasticSearchConnection(app, "ESConnection", config={"url": elasticsearch_url})
    app.get_service("bspump.PumpService").add_connection(connection)
    by_id = bspump.elasticsearch.ElasticSearchLookup(app, "ById", config={"index": index, "mode": "on_demand",
                                                                            "ttl": "50ms"})
    by_code = bspump.elasticsearch.ElasticSearchLookup(app, "ByCode", config={
        "index": index, "mode": "on_demand", "key_field": "code", "source_fields": "n"})
    whole = bspump.elasticsearch.ElasticSearchLookup(app, "Whole", config={"index": index, "key_field": "code"})
    await connection.open()
    try:
        for lookup in (by_id, by_code, whole):
            await lookup.start()
        await by_id.prefetch(["id-1", "id-2", "missing"])
        assert by_id["id-1"]["n"] == 1 and by_id.get("missing") is None and by_id.queries == 1
        await by_code.prefetch(["C3", "C4", "nope"])
        assert by_code["C3"] == {"n": 3, "code": "C3"} and "nope" not in by_code
        assert len(whole) == 30 and whole["C29"]["n"] == 29
        async with AsyncElasticsearch(elasticsearch_url) as es:
            await es.index(index=index, id="id-1", document={"n": 100}, refresh="true")
        await asyncio.sleep(0.1)  # past the 50 ms ttl
        assert (await by_id.aget("id-1"))["n"] == 100
    finally:
        for lookup in (by_id, by_code, whole):
            await lookup.stop()
        await connection.close()


# Features of modules the harness's integration-test distribution lacks (data streams, ingest-common). They run
# against the official images in .github/workflows/elasticsearch.yml, which sets BSPUMP_TEST_ELASTICSEARCH_FULL=1
# so that a missing module fails there instead of skipping.
FULL = os.environ.get("BSPUMP_TEST_ELASTICSEARCH_FULL") == "1"


def lacks(feature: str, exc: Exception) -> None:
    if FULL:
        raise AssertionError(f"the server lacks {feature}: {exc}") from exc
    pytest.skip(f"this Elasticsearch lacks {feature} (the harness's integration-test distribution has no such "
                f"module; the GitHub workflow runs this test): {exc}")


async def test_data_stream_create_and_replay_without_duplicates(elasticsearch_url: str, es_index: str) -> None:
    """Events into a data stream (op_type create); the same events again (a replay): the 409s count as written,
    the stream holds each event once."""
    async with AsyncElasticsearch(elasticsearch_url) as es:
        try:
            await es.indices.put_index_template(name=es_index, index_patterns=[f"{es_index}*"], data_stream={},
                                                template={"mappings": {"properties": {"@timestamp": {"type": "date"},
                                                                                      "n": {"type": "integer"}}}})
        except ApiError as exc:
            lacks("data streams", exc)
    try:
        stream = f"{es_index}-ds"
        for _ in range(2):
            app, pipeline = build(elasticsearch_url, stream, 300, stamped=True, data_stream=True)
            assert await run_app(app, timeout=60) == 0
            letters = pipeline.dead_letter_sink
            assert isinstance(letters, bspump.MemorySink) and not letters.events
            assert pipeline.metrics()["out"] == 300
        assert sorted(await stored(elasticsearch_url, stream)) == list(range(300))
    finally:
        async with AsyncElasticsearch(elasticsearch_url) as es:
            try:
                await es.indices.delete_data_stream(name=f"{es_index}*", expand_wildcards="all")
            except ApiError:  # the integration-test distribution writes data streams but has no API to delete them
                pass
            else:
                await es.indices.delete_index_template(name=es_index)


async def test_ingest_pipeline_runs_and_its_failures_are_dead_lettered(elasticsearch_url: str, index: str) -> None:
    name = f"{index}-pipeline"
    async with AsyncElasticsearch(elasticsearch_url) as es:
        try:
            await es.ingest.put_pipeline(id=name, processors=[
                {"set": {"field": "enriched", "value": True}},
                {"fail": {"if": "ctx.n == 13", "message": "thirteen is refused"}},
            ])
        except ApiError as exc:
            lacks("ingest-common (and painless, for the condition)", exc)
    try:
        app, pipeline = build(elasticsearch_url, index, 20, pipeline=name)
        assert await run_app(app, timeout=60) == 0
        letters = pipeline.dead_letter_sink
        assert isinstance(letters, bspump.MemorySink)
        assert [e["n"] for e in letters.events] == [13]
        assert "thirteen is refused" in letters.contexts[0][keys.ERROR]
        async with AsyncElasticsearch(elasticsearch_url) as es:
            await es.indices.refresh(index=index)
            found = await es.search(index=index, size=100, query={"term": {"enriched": True}})
        assert sorted(h["_source"]["n"] for h in found["hits"]["hits"]) == [n for n in range(20) if n != 13]
    finally:
        async with AsyncElasticsearch(elasticsearch_url) as es:
            await es.ingest.delete_pipeline(id=name)
