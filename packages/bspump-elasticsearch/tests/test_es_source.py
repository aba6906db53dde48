"""ElasticSearchSource against a stand-in node: fallback without point in time, positions, configuration."""

from __future__ import annotations

import json
from typing import Any

import pytest
from es_fake_cluster import FakeCluster, Request

import bspump
from bspump import context as keys
from bspump.elasticsearch import ElasticSearchConnection, ElasticSearchSource
from bspump.testing import make_app, run_app

DOCS = [{"n": n // 2, "id": f"d{n:03d}"} for n in range(25)]  # pairs of equal n: the tiebreaker decides


def searching(request: Request) -> tuple[int, Any]:
    """A node without point in time (405, as older or other servers answer) that sorts and pages DOCS."""
    if request.path.endswith("/_pit"):
        return 405, {"error": {"type": "illegal_argument_exception", "reason": "no _pit here"}, "status": 405}
    if request.path.endswith("/_search"):
        body = json.loads(request.body)
        rows = sorted(DOCS, key=lambda d: (d["n"], d["id"]))
        after = body.get("search_after")
        if after is not None:
            rows = [d for d in rows if [d["n"], d["id"]] > after]
        hits = [{"_index": "events", "_id": d["id"], "_source": d, "sort": [d["n"], d["id"]]}
                for d in rows[:body["size"]]]
        return 200, {"hits": {"hits": hits}}
    return 200, {"status": "green"}


async def test_without_point_in_time_it_pages_with_search_after_and_commits_the_last_position(tmp_path: Any) -> None:
    async with FakeCluster(answer=searching) as cluster:
        app = make_app(environ={"BSPUMP_STATE_DIR": str(tmp_path)})
        app.get_service("bspump.PumpService").add_connection(
            ElasticSearchConnection(app, "ESConnection", config={"url": cluster.url}))
        pipeline = bspump.Pipeline(app, "P")
        source = ElasticSearchSource(app, pipeline, connection="ESConnection", config={
            "index": "events", "sort_field": "n", "tiebreaker_field": "id", "batch_size": 10})
        sink = bspump.MemorySink(app, pipeline, id="Received")
        pipeline.build(source, sink)
        app.pump_service.add_pipeline(pipeline)
        assert await run_app(app, timeout=20) == 0
    assert [e["id"] for e in sink.events] == [d["id"] for d in DOCS]
    searches = [json.loads(r.body) for r in cluster.requests if r.path == "/events/_search"]
    assert len(searches) == 3 and all("pit" not in s for s in searches)
    assert [s.get("search_after") for s in searches] == [None, [4, "d009"], [9, "d019"]]
    assert sink.contexts[0][keys.KEY] == "d000" and sink.contexts[0][keys.OFFSET] == [0, "d000"]
    assert await app.checkpoints.load("P.ElasticSearchSource") == {"events": [12, "d024"]}


def test_a_resumed_read_filters_after_the_position() -> None:
    app = make_app()
    app.get_service("bspump.PumpService").add_connection(ElasticSearchConnection(app, "ESConnection"))
    source = ElasticSearchSource(app, bspump.Pipeline(app, "P"), connection="ESConnection", config={
        "index": "events", "sort_field": "n", "tiebreaker_field": "id", "query": '{"term": {"level": "error"}}'})
    source.cursor = [4, "d009"]
    query = source._query_after()
    assert query["bool"]["must"] == [{"term": {"level": "error"}}]
    after = query["bool"]["filter"][0]["bool"]["should"]
    assert after[0] == {"range": {"n": {"gt": 4}}}
    assert after[1]["bool"]["filter"][1] == {"range": {"id": {"gt": "d009"}}}
    source.tiebreaker_field = ""
    source.cursor = [4]
    assert source._query_after()["bool"]["filter"] == [{"range": {"n": {"gte": 4}}}]  # at least once


def test_configuration_errors_name_the_key() -> None:
    app = make_app()
    app.get_service("bspump.PumpService").add_connection(ElasticSearchConnection(app, "ESConnection"))
    pipeline = bspump.Pipeline(app, "P")
    for config, key in (({"sort_field": "n"}, "index"), ({"index": "x"}, "sort_field"),
                        ({"index": "x", "sort_field": "n", "query": "{not json"}, "query")):
        with pytest.raises(bspump.ConfigError, match=key):
            ElasticSearchSource(app, pipeline, connection="ESConnection", config=config)
