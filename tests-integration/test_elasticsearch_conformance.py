"""bspump-elasticsearch passes the core's conformance kit against the real Elasticsearch of the harness."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch
from elasticsearch.helpers import async_bulk

import bspump.elasticsearch
from bspump.testing import ConnectorConformance

pytestmark = [pytest.mark.elasticsearch]

MAPPINGS = {"properties": {"n": {"type": "integer"}, "text": {"type": "keyword"}}}


class TestElasticSearchConformance(ConnectorConformance):
    connection_class = bspump.elasticsearch.ElasticSearchConnection
    sink_class = bspump.elasticsearch.ElasticSearchSink
    source_class = bspump.elasticsearch.ElasticSearchSource
    lookup_class = bspump.elasticsearch.ElasticSearchLookup
    url: str
    created: list[str]

    @pytest.fixture(autouse=True)
    def _cluster(self, elasticsearch_url: str) -> Iterator[None]:
        self.url = elasticsearch_url
        self.created = []
        yield
        if self.created:
            asyncio.run(self._delete(self.created))

    # -- the kit's hooks ---------------------------------------------------------------------------------------
    def connection_config(self) -> dict[str, Any]:
        return {"url": self.url, "request_timeout": 30}

    async def create_target(self) -> str:
        name = f"conformance-{uuid.uuid4().hex[:12]}"
        async with AsyncElasticsearch(self.url) as es:
            await es.indices.create(index=name, mappings=MAPPINGS)
        self.created.append(name)
        return name

    def sink_config(self, target: str) -> dict[str, Any]:
        return {"index": target, "bulk_max_actions": 20, "concurrency": 3}

    async def read_target(self, target: str) -> list[Any]:
        async with AsyncElasticsearch(self.url) as es:
            await es.indices.refresh(index=target)
            found = await es.search(index=target, size=10000, query={"match_all": {}})
        return [hit["_source"] for hit in found["hits"]["hits"]]

    def bad_event(self) -> Any:
        return {"n": "not a number", "text": "refused by the mapping"}

    async def create_origin(self) -> str:
        return await self.create_target()

    def source_config(self, origin: str) -> dict[str, Any]:
        return {"index": origin, "sort_field": "n", "tiebreaker_field": "text", "batch_size": self.batch_size,
                "commit_interval": "100ms"}

    async def feed_origin(self, origin: str, events: list[Any]) -> None:
        async with AsyncElasticsearch(self.url) as es:
            await async_bulk(es, ({"_index": origin, "_source": event} for event in events), refresh="true")

    # -- the cluster ----------------------------------------------------------------------------------------------
    async def _delete(self, names: list[str]) -> None:
        async with AsyncElasticsearch(self.url) as es:
            await es.indices.delete(index=",".join(names), ignore_unavailable=True)
