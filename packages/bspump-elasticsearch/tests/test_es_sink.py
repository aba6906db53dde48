"""ElasticSearchSink against recorded bulk responses served over real HTTP (tests/fake_cluster.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from es_fake_cluster import FakeCluster, Request, acknowledge, recorded

import bspump
from bspump import context as keys
from bspump.elasticsearch import BulkItemError, ElasticSearchConnection, ElasticSearchSink
from bspump.elasticsearch.actions import position_id
from bspump.testing import make_app, run_app

Item = tuple[Any, dict[str, Any]]


class ItemSource(bspump.Source):
    """Emits the given batches of (event, context) pairs, each batch with a delivery it records."""

    def __init__(self, *args: Any, batches: Sequence[Sequence[Item]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches = batches
        self.completed: list[int] = []

    async def main(self) -> None:
        for number, batch in enumerate(self.batches):
            delivery = bspump.Delivery({"batch": number}, lambda d: self.completed.append(d.positions["batch"]))
            await self.emit([e for e, _ in batch], contexts=[dict(c) for _, c in batch], delivery=delivery)


def kafka_items(events: Sequence[Any], start: int = 0) -> list[Item]:
    """Events as a Kafka source would emit them: each with its topic, partition and offset."""
    return [(event, {keys.SOURCE: "KafkaSource", keys.TOPIC: "t", keys.PARTITION: 0, keys.OFFSET: start + i})
            for i, event in enumerate(events)]


Run = tuple[bspump.BSPumpApplication, ElasticSearchSink, bspump.MemorySink, ItemSource]


async def run_sink(cluster: FakeCluster, batches: Sequence[Sequence[Item]], policy: str = "dead-letter",
                   connection: dict[str, Any] | None = None, **sink_config: Any) -> Run:
    app = make_app()
    settings = {"url": cluster.url, "reconnect_initial": 0.01, "reconnect_jitter": 0, **(connection or {})}
    app.get_service("bspump.PumpService").add_connection(ElasticSearchConnection(app, "ESConnection",
                                                                                 config=settings))
    pipeline = bspump.Pipeline(app, "P", config={"error_policy": policy, "retry_backoff": "5ms"})
    source = ItemSource(app, pipeline, batches=batches)
    sink = ElasticSearchSink(app, pipeline, connection="ESConnection", config={"index": "events", **sink_config})
    letters = bspump.MemorySink(app, pipeline, id="DeadLetters")
    pipeline.build(source, sink, dead_letter=letters if policy == "dead-letter" else None)
    app.pump_service.add_pipeline(pipeline)
    await run_app(app, timeout=20)
    return app, sink, letters, source


async def test_every_item_of_a_mixed_response_is_classified() -> None:
    """201 written, 409 on create written, 429 and 503 sent again (same ids), 400 dead-lettered with its
    status and reason; the batch completes once all that is settled."""
    async with FakeCluster(bulk_replies=[(200, recorded("bulk_mixed"))]) as cluster:
        events = [{"n": 0}, {"n": 1}, {"n": 2}, {"n": "three"}, {"n": 4}, {"n": 5}]
        app, sink, letters, source = await run_sink(cluster, [kafka_items(events)], op_type="create")
    first, retry = cluster.bulks()
    assert [d["n"] for d in retry.documents()] == [2, 4]
    first_ids = [a["create"]["_id"] for a in first.actions()]
    assert [a["create"]["_id"] for a in retry.actions()] == [first_ids[2], first_ids[4]]
    assert letters.events == [{"n": "three"}]
    error = letters.contexts[0][keys.ERROR]
    assert error.startswith("BulkItemError: 400 document_parsing_exception: [1:6] failed to parse field [n]")
    assert "number_format_exception" in error
    assert letters.contexts[0][keys.OFFSET] == 3
    assert source.completed == [0] and app.exit_code == 0
    assert sink.counters.events_out == 5


async def test_a_permanent_item_error_under_stop_fails_the_pipeline_and_acknowledges_nothing() -> None:
    async with FakeCluster(bulk_replies=[(200, recorded("bulk_mixed"))]) as cluster:
        events = [{"n": i} for i in range(6)]
        app, _, _, source = await run_sink(cluster, [kafka_items(events)], policy="stop", op_type="create")
    assert app.exit_code == 1 and source.completed == []


async def test_409_on_index_is_not_counted_as_written() -> None:
    """Only ``create`` takes a conflict as "already written"; for ``index`` it is a refusal."""
    reply = {"errors": True, "items": [{"index": {"_index": "events", "_id": "x", "status": 409, "error": {
        "type": "version_conflict_engine_exception", "reason": "version conflict"}}}]}
    async with FakeCluster(bulk_replies=[(200, reply)]) as cluster:
        _, sink, letters, _ = await run_sink(cluster, [kafka_items([{"n": 1}])])
    assert letters.events == [{"n": 1}] and sink.counters.events_out == 0
    assert "409 version_conflict_engine_exception" in letters.contexts[0][keys.ERROR]


async def test_transient_items_past_retry_timeout_meet_the_policy() -> None:
    """With a retry budget, items still refused with 429 when it is spent are dead-lettered, not dropped."""
    busy = {"errors": True, "items": [{"index": {"_index": "events", "status": 429, "error": {
        "type": "es_rejected_execution_exception", "reason": "rejected"}}}]}
    async with FakeCluster(answer=lambda r: (200, busy) if r.path.endswith("_bulk") else (200, {})) as cluster:
        _, _, letters, source = await run_sink(cluster, [kafka_items([{"n": 1}])], retry_timeout="100ms")
    assert letters.events == [{"n": 1}] and "429 es_rejected_execution_exception" in letters.contexts[0][keys.ERROR]
    assert len(cluster.bulks()) >= 2 and source.completed == [0]


async def test_413_splits_the_request_and_lowers_the_limits() -> None:
    too_large = {"error": {"type": "content_too_long", "reason": "too long"}, "status": 413}
    async with FakeCluster(bulk_replies=[(413, too_large)]) as cluster:
        events = [{"n": i} for i in range(8)]
        _, sink, letters, source = await run_sink(cluster, [kafka_items(events)])
    assert [len(r.actions()) for r in cluster.bulks()] == [8, 4, 4]
    assert sink.shrinks == 1 and not letters.events and source.completed == [0]
    assert sink.limit_actions == 4 + 2 * 100  # halved, then raised by a tenth of 1000 by each success
    assert sorted(d["n"] for r in cluster.bulks()[1:] for d in r.documents()) == list(range(8))


async def test_413_for_a_single_action_is_permanent() -> None:
    too_large = {"error": {"type": "content_too_long", "reason": "too long"}, "status": 413}
    async with FakeCluster(bulk_replies=[(413, too_large)]) as cluster:
        _, _, letters, _ = await run_sink(cluster, [kafka_items([{"n": 1}])])
    assert letters.events == [{"n": 1}] and "413 request_entity_too_large" in letters.contexts[0][keys.ERROR]


async def test_a_whole_request_429_shrinks_and_retries_after_the_backoff() -> None:
    async with FakeCluster(bulk_replies=[(429, recorded("bulk_rejected_request"))]) as cluster:
        events = [{"n": i} for i in range(8)]
        _, sink, letters, source = await run_sink(cluster, [kafka_items(events)])
    assert [len(r.actions()) for r in cluster.bulks()] == [8, 4, 4]
    assert sink.shrinks == 1 and not letters.events and source.completed == [0]


async def test_bulk_requests_are_bounded_by_actions_and_bytes() -> None:
    async with FakeCluster() as cluster:
        events = [{"n": i, "pad": "x" * 100} for i in range(25)]
        await run_sink(cluster, [kafka_items(events)], bulk_max_actions=10)
        assert [len(r.actions()) for r in cluster.bulks()] == [10, 10, 5]
        cluster.requests.clear()
        await run_sink(cluster, [kafka_items(events)], bulk_max_bytes=1024)
    sizes = [len(r.body) for r in cluster.bulks()]
    assert max(sizes) <= 1024 and sum(len(r.actions()) for r in cluster.bulks()) == 25


async def test_a_dropped_connection_sends_the_whole_request_again() -> None:
    """The node closes the connection without answering a bulk (twice): nothing of it counts as written; with
    the client's own retries off the sink reports a link failure, the connection reconnects (health answers)
    and the same actions are sent again."""
    seen: list[int] = []

    def answer(request: Request) -> tuple[int, Any]:
        if request.path.endswith("_bulk"):
            seen.append(len(request.actions()))
            if len(seen) <= 2:  # the HTTP client itself resends a PUT once on a new connection
                return -1, None  # close without an answer
            return 200, acknowledge(request)
        return 200, {"status": "green"}

    async with FakeCluster(answer=answer) as cluster:
        _, sink, letters, source = await run_sink(cluster, [kafka_items([{"n": i} for i in range(5)])],
                                                  connection={"max_retries": 0})
    first, resent, again = cluster.bulks()
    assert first.body == resent.body == again.body and not letters.events and source.completed == [0]
    assert sink.es.connect_count == 2 and sink.counters.events_out == 5


def test_ids_derive_from_the_source_position() -> None:
    context = {keys.SOURCE: "KafkaSource", keys.TOPIC: "t", keys.PARTITION: 1, keys.OFFSET: 7, keys.KEY: b"k"}
    assert position_id(context) == position_id(dict(context, key=b"other"))  # the message key is no position
    assert position_id(context) != position_id(dict(context, offset=8))
    assert position_id({keys.SOURCE: "memory"}) is None  # locates no single event: the cluster generates ids
    assert len(position_id(context) or "") == 32


async def test_replays_write_the_same_ids_and_split_records_are_numbered() -> None:
    shared = {keys.SOURCE: "S", keys.PATH: "/var/log/a.log", keys.LINE: 10}
    items: list[Item] = [({"part": 1}, shared), ({"part": 2}, shared), ({"part": 3}, dict(shared, line=11))]
    async with FakeCluster() as cluster:
        await run_sink(cluster, [items])
        await run_sink(cluster, [items])
    first, replay = ([a["index"]["_id"] for a in r.actions()] for r in cluster.bulks())
    assert first == replay
    assert first[1] == f"{first[0]}-1" and len(set(first)) == 3


async def test_id_field_routing_pipeline_and_refresh() -> None:
    async with FakeCluster() as cluster:
        await run_sink(cluster, [kafka_items([{"doc": {"id": 42}, "tenant": "a", "n": 1}])], id_field="doc.id",
                       routing_field="tenant", pipeline="enrich", refresh="wait_for")
    (request,) = cluster.bulks()
    assert request.path == "/events/_bulk"
    assert request.query["pipeline"] == "enrich" and request.query["refresh"] == "wait_for"
    assert request.actions() == [{"index": {"_id": "42", "routing": "a"}}]


async def test_index_templates_from_timestamp_and_fields() -> None:
    events = [{"@timestamp": "2026-03-04T23:59:59+00:00", "svc": "Api"}, {"@timestamp": 1772668800, "svc": "db"},
              {"@timestamp": 1772668800123, "svc": "db"}, {"svc": "no-time"}]
    async with FakeCluster() as cluster:
        await run_sink(cluster, [kafka_items(events)], index="logs-{svc}-{%Y.%m.%d}")
    (request,) = cluster.bulks()
    assert request.path == "/_bulk"
    indexes = [a["index"]["_index"] for a in request.actions()]
    assert indexes[:3] == ["logs-api-2026.03.04", "logs-db-2026.03.05", "logs-db-2026.03.05"]
    assert indexes[3].startswith("logs-no-time-20")  # no timestamp: the time of writing


async def test_op_types_update_upsert_delete() -> None:
    async with FakeCluster() as cluster:
        for op in ("update", "upsert", "delete"):
            await run_sink(cluster, [kafka_items([{"id": "a", "n": 1}])], op_type=op, id_field="id")
    update, upsert, delete = cluster.bulks()
    assert update.actions() == [{"update": {"_id": "a", "retry_on_conflict": 3}}]
    assert update.documents() == [{"doc": {"id": "a", "n": 1}}]
    assert upsert.documents() == [{"doc": {"id": "a", "n": 1}, "doc_as_upsert": True}]
    assert delete.actions() == [{"delete": {"_id": "a"}}] and delete.body.count(b"\n") == 1


async def test_events_that_cannot_become_actions_meet_the_policy() -> None:
    """A missing id field or an update without any id is dead-lettered before sending, with a message naming
    the problem; a text event that is not JSON is sent as it is and the node's 400 dead-letters it."""
    async with FakeCluster() as cluster:
        _, _, letters, _ = await run_sink(cluster, [kafka_items([{"id": "a"}, {"n": 1}])], id_field="id")
        _, _, letters2, _ = await run_sink(cluster, [[({"n": 1}, {keys.SOURCE: "memory"})]], op_type="update")
        _, _, letters3, _ = await run_sink(cluster, [kafka_items([b'{"ok": 1}', b"not json {"])])
    assert letters.events == [{"n": 1}] and "no field 'id'" in letters.contexts[0][keys.ERROR]
    assert "op_type = update needs an _id" in letters2.contexts[0][keys.ERROR]
    assert letters3.events == [b"not json {"] and "400 document_parsing_exception" in letters3.contexts[0][keys.ERROR]
    assert [r.documents() for r in cluster.bulks()] == [[{"id": "a"}], [{"ok": 1}, b"not json {"]]


def test_configuration_errors_name_the_key() -> None:
    app = make_app()
    app.get_service("bspump.PumpService").add_connection(ElasticSearchConnection(app, "ESConnection"))
    pipeline = bspump.Pipeline(app, "P")
    with pytest.raises(bspump.ConfigError, match="index"):
        ElasticSearchSink(app, pipeline, connection="ESConnection", config={})
    with pytest.raises(bspump.ConfigError, match="unbalanced braces"):
        ElasticSearchSink(app, pipeline, connection="ESConnection", config={"index": "logs-{%Y"})
    with pytest.raises(bspump.ConfigError, match="data stream only takes op_type = create"):
        ElasticSearchSink(app, pipeline, connection="ESConnection",
                          config={"index": "logs", "data_stream": True, "op_type": "index"})


def test_item_error_message() -> None:
    error = BulkItemError.from_item("index", recorded("bulk_mixed")["items"][3]["create"])
    assert str(error).startswith("400 document_parsing_exception: [1:6] failed to parse field [n]")
    assert str(error).endswith("(index 'events', _id 'ID3')") and error.status == 400


async def test_writes_in_flight_when_the_connection_reconnects_are_sent_again() -> None:
    """Two bulk requests wait for their answers when another user reports a link failure: the connection
    closes the shared client under them. Both batches are sent again once it is ready; nothing is
    dead-lettered. (A request that starts while the client is being closed gets aiohttp's unwrapped
    ``RuntimeError("Session is closed")`` instead: test_es_errors covers that it counts as a link failure.)"""
    gate = asyncio.Event()
    async with FakeCluster(gate=gate) as cluster:
        app = make_app()
        connection = ElasticSearchConnection(app, "ESConnection", config={"url": cluster.url,
                                                                          "reconnect_initial": 0.01})
        app.get_service("bspump.PumpService").add_connection(connection)
        pipeline = bspump.Pipeline(app, "P", config={"error_policy": "dead-letter", "retry_backoff": "5ms"})
        source = ItemSource(app, pipeline, batches=[kafka_items([{"n": 1}]), kafka_items([{"n": 2}], start=1)])
        letters = bspump.MemorySink(app, pipeline, id="DeadLetters")
        sink = ElasticSearchSink(app, pipeline, connection="ESConnection", config={"index": "events",
                                                                                   "concurrency": 2})
        pipeline.build(source, sink, dead_letter=letters)
        app.pump_service.add_pipeline(pipeline)
        task = asyncio.create_task(run_app(app, timeout=20))
        while cluster.held < 2:
            await asyncio.sleep(0.005)
        connection.report_failure(ConnectionError("reported by another user of the connection"))
        while connection.connect_count < 2:
            await asyncio.sleep(0.005)
        gate.set()
        assert await task == 0
    assert not letters.events and source.completed == [0, 1] and sink.counters.events_out == 2
    assert sorted(d["n"] for r in cluster.bulks()[2:] for d in r.documents()) == [1, 2]
