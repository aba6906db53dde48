"""Smoke: Elasticsearch REST with AsyncElasticsearch (the real server: harness locally, service container in CI)."""

from __future__ import annotations

import pytest
from elasticsearch import AsyncElasticsearch
from elasticsearch.helpers import async_bulk

pytestmark = [pytest.mark.smoke, pytest.mark.elasticsearch]


async def test_index_bulk_search(elasticsearch_url: str, es_index: str) -> None:
    es = AsyncElasticsearch(elasticsearch_url, request_timeout=30)
    try:
        await es.indices.create(
            index=es_index,
            mappings={
                "properties": {"n": {"type": "integer"}, "kind": {"type": "keyword"}}
            },
        )
        await es.index(
            index=es_index,
            id="first",
            document={"n": -1, "kind": "single"},
            refresh="true",
        )
        ok, errors = await async_bulk(
            es,
            (
                {
                    "_index": es_index,
                    "_id": str(i),
                    "n": i,
                    "kind": "even" if i % 2 == 0 else "odd",
                }
                for i in range(100)
            ),
            refresh="true",
        )
        assert ok == 100 and not errors
        count = await es.count(index=es_index)
        assert count["count"] == 101
        found = await es.search(
            index=es_index,
            query={"term": {"kind": "odd"}},
            sort=[{"n": "desc"}],
            size=3,
        )
        assert [h["_source"]["n"] for h in found["hits"]["hits"]] == [99, 97, 95]
        doc = await es.get(index=es_index, id="first")
        assert doc["_source"]["kind"] == "single"
    finally:
        await es.close()
