"""MongoDBLookup: documents of a collection by key, loaded whole or fetched on demand with a TTL cache."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import bspump
from bspump.config import Seconds

from .connection import MongoDBConnection
from .options import json_value


class MongoDBLookup(bspump.CachedLookup):
    """Reference data from ``collection`` (of ``database``, default the connection's), keyed by the ``key``
    field (default ``_id``); each entry is the document (less ``projection``, JSON), or only its ``value``
    field when set.

    ``mode = whole`` reads every document ``filter`` (JSON) matches at start and every ``refresh`` seconds;
    ``mode = on_demand`` queries the keys a batch needs with one ``{key: {$in: [...]}}`` find per
    ``fetch_batch`` keys, and caches them (and the keys not found) for ``ttl`` seconds, at most
    ``max_entries``. The documents are read through ``connection`` (default ``MongoDBConnection``) with its
    read preference; ``ready_timeout`` is how long a load waits for that connection to be ready (the
    application opens connections and loads lookups together at start).
    """

    ConfigRequired: ClassVar[tuple[str, ...]] = ("collection",)
    ConfigDefaults: ClassVar[dict[str, Any]] = {
        "connection": "MongoDBConnection",
        "database": "",
        "collection": "",
        "key": "_id",
        "value": "",
        "filter": "",
        "projection": "",
        "ready_timeout": Seconds(30.0, min=0.1),
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        config = self.Config
        self.key: str = config.get("key") or "_id"
        self.value: str = config.get("value") or ""
        self.filter: dict[str, Any] = json_value(config, "filter", dict, '{"active": true}') or {}
        projection = json_value(config, "projection", dict, '{"name": 1, "country": 1}')
        if projection and any(v in (1, True) for v in projection.values()):
            projection = {**projection, self.key: 1}
        self.projection: dict[str, Any] | None = projection

    def preflight(self) -> None:
        """Besides the mode: the connection named by ``connection`` exists and is a MongoDB one."""
        super().preflight()
        self.mongo()

    def mongo(self) -> MongoDBConnection:
        """The connection named by ``connection`` (an unknown ID fails, listing the known ones)."""
        name = str(self.Config.get("connection"))
        connection = self.app.pump_service.locate_connection(name, referrer=f"lookup:{self.id}")
        if not isinstance(connection, MongoDBConnection):
            raise self.Config.error("connection", f"{name!r} is not a MongoDBConnection")
        return connection

    async def _collection(self) -> Any:
        connection = self.mongo()
        await connection.wait_ready(self.Config.getseconds("ready_timeout"))
        return connection.collection(self.Config.get("collection"), self.Config.get("database") or None)

    def entry(self, document: Mapping[str, Any]) -> Any:
        """What the lookup holds for one document: the document, or its ``value`` field."""
        return document.get(self.value) if self.value else document

    async def load(self) -> Mapping[Any, Any]:
        """Every document ``filter`` matches, by ``key`` (``mode = whole``)."""
        collection = await self._collection()
        return {doc[self.key]: self.entry(doc) async for doc in collection.find(self.filter, self.projection)
                if self.key in doc}

    async def fetch(self, keys: Sequence[Any]) -> Mapping[Any, Any]:
        """The documents whose ``key`` is one of ``keys`` (``mode = on_demand``), in one query."""
        collection = await self._collection()
        query = {"$and": [self.filter, {self.key: {"$in": list(keys)}}]} if self.filter else \
            {self.key: {"$in": list(keys)}}
        return {doc[self.key]: self.entry(doc) async for doc in collection.find(query, self.projection)
                if self.key in doc}
