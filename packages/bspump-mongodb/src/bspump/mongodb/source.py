"""MongoDBSource: the documents a query finds, streamed from the cursor in batches, resumable by a field."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

import bspump
from bspump import context as keys
from bspump.config import Int, Seconds

from .connection import Document, MongoDBConnection
from .options import dump_bson, json_value, load_bson, sort_spec
from .positions import CheckpointInDeployment

log = logging.getLogger("bspump.mongodb")

#: The one partition of a query in the checkpoint.
QUERY = "query"


class MongoDBSource(CheckpointInDeployment, bspump.PositionedSource[str]):
    """Emits the documents of ``collection`` (of ``database``, default the connection's) that ``filter``
    matches (JSON, e.g. ``{"status": "paid"}``; extended JSON for dates and ids), with ``projection`` (JSON,
    e.g. ``{"_id": 1, "total": 1}``), read from the cursor ``batch_size`` documents at a time and emitted in
    batches of that size.

    ``resume_field`` (default ``_id``; its values must be unique and comparable) makes the query resumable:
    documents are read in ascending order of that field, and the value of the last acknowledged document is
    checkpointed (``commit_interval``, at stop), so that a restart reads only documents past it. With
    ``interval`` > 0 the query runs again every ``interval`` seconds for documents past the last one read
    (an incremental poll, e.g. of an append-only collection by ``_id`` or ``created``); with 0 (default) the
    source reads once and is then exhausted. An empty ``resume_field`` turns positions off: every run reads
    everything, in the order of ``sort`` (JSON, e.g. ``{"created": -1}``), which otherwise must be empty or
    sort by ``resume_field`` alone.

    A cursor that fails (a lost connection, a cursor the server timed out while the pipeline was throttled)
    is opened again after the last document read, with the pipeline's retry backoff.
    """

    ConnectionType = MongoDBConnection
    ConfigRequired: ClassVar[tuple[str, ...]] = ("collection",)
    ConfigDefaults: ClassVar[dict[str, Any]] = {
        "database": "",
        "collection": "",
        "filter": "",
        "projection": "",
        "sort": "",
        "batch_size": Int(1000, min=1, max=100_000),
        "resume_field": "_id",
        "interval": Seconds(0.0, min=0.0),
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        assert isinstance(self.connection, MongoDBConnection)
        self.mongo: MongoDBConnection = self.connection
        config = self.Config
        self.database_name: str | None = config.get("database") or None
        self.collection_name: str = config.get("collection")
        self.filter: dict[str, Any] = json_value(config, "filter", dict, '{"status": "paid"}') or {}
        self.projection: dict[str, Any] | None = json_value(config, "projection", dict, '{"_id": 1, "total": 1}')
        self.resume_field: str = config.get("resume_field") or ""
        sort = sort_spec(config, "sort")
        if self.resume_field:
            if sort and [field for field, _ in sort] != [self.resume_field]:
                raise config.error("sort", f"a resumable query is read in the order of resume_field "
                                           f"({self.resume_field!r}); leave sort empty, or set resume_field empty")
            sort = [(self.resume_field, 1)]
            if self.projection and any(v in (1, True) for v in self.projection.values()):
                self.projection = {**self.projection, self.resume_field: 1}
        self.sort = sort
        self.batch_size = config.getint("batch_size")
        self.interval = config.getseconds("interval")
        #: The ``resume_field`` value of the last document read (not necessarily acknowledged yet).
        self.last: Any = None
        self.has_last = False
        #: Query runs completed.
        self.runs = 0

    def query(self) -> dict[str, Any]:
        """The filter of the next run: ``filter``, and past the last document read when resumable."""
        if not self.has_last:
            return self.filter
        past = {self.resume_field: {"$gt": self.last}}
        return {"$and": [self.filter, past]} if self.filter else past

    async def main(self) -> None:
        if self.resume_field:
            stored = await self.start_client(self.load_positions, "reading the checkpoint")
            if stored.get(QUERY) is not None:
                self.last, self.has_last = load_bson(stored[QUERY]), True
        while True:
            # A failed run is repeated from after the last document read.
            await self.start_client(self.read_once, "the query")
            self.runs += 1
            if self.interval <= 0:
                return
            await asyncio.sleep(self.interval)

    async def read_once(self) -> None:
        """One run of the query, from the last document read on, emitted in batches."""
        await self.wait_connections_ready()
        collection = self.mongo.collection(self.collection_name, self.database_name)
        cursor = collection.find(self.query(), self.projection, sort=self.sort, batch_size=self.batch_size)
        context = {keys.SOURCE: self.qualified_id}
        try:
            events: list[Document] = []
            async for document in cursor:
                events.append(document)
                if len(events) >= self.batch_size:
                    await self._emit(events, context)
                    events = []
            if events:
                await self._emit(events, context)
        finally:
            await cursor.close()

    async def _emit(self, events: list[Document], context: dict[str, Any]) -> None:
        await self.wait_ready()
        if not self.resume_field:
            await self.emit(events, context)
            return
        self.last, self.has_last = events[-1].get(self.resume_field), True
        delivery = self.track({QUERY: dump_bson(self.last)})
        await self.emit(events, context, delivery=delivery)
        await self.maybe_commit()
