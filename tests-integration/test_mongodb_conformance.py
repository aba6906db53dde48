"""bspump-mongodb passes the core's conformance kit: the connection, the query source and the sink against
FerretDB and against SecantusDB; the change-stream source against SecantusDB (on FerretDB, which has no change
streams, those tests are skipped with the server's reason). In the GitHub workflow both URIs name a real
MongoDB replica set, so every class runs there."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from mongodb_support import change_stream_support, mongo_client, operation_time, validator_support

import bspump.mongodb
from bspump.testing import ConnectorConformance

pytestmark = [pytest.mark.mongodb]


class MongoConformance(ConnectorConformance):
    connection_class = bspump.mongodb.MongoDBConnection
    source_class: ClassVar[Any] = bspump.mongodb.MongoDBSource
    sink_class: ClassVar[Any] = bspump.mongodb.MongoDBSink
    lookup_class = bspump.mongodb.MongoDBLookup
    uri_fixture: ClassVar[str]
    uri: str
    database: str
    validators: bool

    @pytest.fixture(autouse=True)
    def _server(self, request: pytest.FixtureRequest) -> Iterator[None]:
        # The URI first: mongo_db_name drops the database on it at teardown, so it must outlive that.
        self.uri = request.getfixturevalue(self.uri_fixture)
        self.database = request.getfixturevalue("mongo_db_name")
        self.validators = asyncio.run(validator_support(self.uri))
        yield

    def _name(self) -> str:
        return f"c{uuid.uuid4().hex[:10]}"

    # -- the kit's hooks ---------------------------------------------------------------------------------------
    def connection_config(self) -> dict[str, Any]:
        return {"uri": self.uri, "database": self.database, "server_selection_timeout": "5s"}

    async def create_target(self) -> str:
        name = self._name()
        if self.validators:
            async with mongo_client(self.uri) as client:
                await client[self.database].create_collection(name, validator={"n": {"$gte": 0}})
        return name

    def sink_config(self, target: str) -> dict[str, Any]:
        return {"collection": target}

    async def read_target(self, target: str) -> list[Any]:
        async with mongo_client(self.uri) as client:
            return [doc async for doc in client[self.database][target].find({})]

    def bad_event(self) -> Any:
        # A validator refuses it where the server has validators; FerretDB 1.x has none, but refuses '$' fields.
        return {"n": -1, "text": "refused"} if self.validators else {"n": -1, "$text": "refused"}

    async def create_origin(self) -> str:
        return self._name()

    def source_config(self, origin: str) -> dict[str, Any]:
        return {"collection": origin, "batch_size": self.batch_size, "commit_interval": "100ms"}

    async def feed_origin(self, origin: str, events: list[Any]) -> None:
        async with mongo_client(self.uri) as client:
            await client[self.database][origin].insert_many([dict(e) for e in events])


class TestFerretDBConformance(MongoConformance):
    uri_fixture = "mongodb_uri"


class TestSecantusDBConformance(MongoConformance):
    uri_fixture = "mongodb_cs_uri"


class ChangeStreamConformance(MongoConformance):
    """The change-stream source reads what was written to a collection after ``start_at``."""

    source_class = bspump.mongodb.MongoDBChangeStreamSource
    sink_class = None
    starts: dict[str, int]

    @pytest.fixture(autouse=True)
    def _change_streams(self, _server: None) -> None:
        missing = asyncio.run(change_stream_support(self.uri))
        if missing is not None:
            pytest.skip(f"{self.uri_fixture}: {missing}")
        self.starts = {}

    async def create_origin(self) -> str:
        name = self._name()
        async with mongo_client(self.uri) as client:
            await client[self.database].create_collection(name)
        self.starts[name] = await operation_time(self.uri, self.database)
        return name

    def source_config(self, origin: str) -> dict[str, Any]:
        return {"collection": origin, "batch_size": self.batch_size, "commit_interval": "100ms",
                "max_await": "50ms", "start_at": str(self.starts[origin])}

    def number(self, record: Any) -> int:
        if isinstance(record, dict) and "fullDocument" in record:
            record = record["fullDocument"]
        return super().number(record)


class TestSecantusDBChangeStreamConformance(ChangeStreamConformance):
    uri_fixture = "mongodb_cs_uri"


class TestFerretDBChangeStreamConformance(ChangeStreamConformance):
    uri_fixture = "mongodb_uri"
