"""ElasticSearchLookup: documents of an index by ``_id`` or by a field, loaded whole or fetched on demand."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, cast

import bspump
from bspump.config import Int, Seconds

from .actions import EncodeError, field_value
from .connection import ElasticSearchConnection

if TYPE_CHECKING:
    from bspump import BSPumpApplication


class ElasticSearchLookup(bspump.CachedLookup):
    """The documents (``_source``) of ``index``, keyed by their ``_id`` or, with ``key_field``, by that field.

    ``mode`` ``on_demand`` (what a large or live index wants) fetches the keys a batch needs: a multi-get by
    ``_id``, or one terms query on ``key_field`` (collapsed to one document per key: the field should be
    unique; a keyword or numeric field), and caches them (and the keys not found) for ``ttl`` seconds, at
    most ``max_entries``, ``fetch_batch`` keys per request. ``mode`` ``whole`` loads every document at start
    (and every ``refresh`` seconds), paging with ``search_after`` on a point in time; it refuses an index of
    more than ``max_documents`` documents rather than fill the memory.

    ``connection`` names the :class:`ElasticSearchConnection` (default: the one whose ID is
    ``ElasticSearchConnection``, or the only one there is); each query waits up to ``ready_timeout``
    seconds for it to be ready. ``source_fields`` (comma-separated) keeps only those fields of each document.
    Keys are strings for ``_id``s; for ``key_field`` they are the field's values as the documents hold them.
    """

    ConfigDefaults: ClassVar[dict[str, Any]] = {
        "connection": "",
        "index": "",
        "key_field": "",
        "source_fields": "",
        "max_documents": Int(1_000_000, min=1),
        "ready_timeout": Seconds(30.0, min=0.0, max=3600.0),
    }

    def __init__(
        self,
        app: BSPumpApplication,
        lookup_id: str | None = None,
        config: Mapping[str, Any] | None = None,
        connection: str | None = None,
    ) -> None:
        super().__init__(app, lookup_id, config=config)
        config = self.Config
        self.connection_id = connection or str(config.get("connection") or "")
        self.index = str(config.get("index") or "").strip()
        if not self.index:
            raise config.error("index", "is required: the index (or alias) holding the documents")
        self.key_field = str(config.get("key_field") or "").strip()
        self.source_fields = [f.strip() for f in config.getlist("source_fields") if f.strip()]
        self.max_documents = config.getint("max_documents")
        self.ready_timeout = config.getseconds("ready_timeout")
        self._connection: ElasticSearchConnection | None = None

    @property
    def es(self) -> ElasticSearchConnection:
        """The connection, found at the first use (connections may be added after the lookup)."""
        if self._connection is None:
            service = self.app.pump_service
            if self.connection_id:
                found = service.locate_connection(self.connection_id, f"lookup:{self.id}")
            else:
                candidates = [c for c in service.connections.values() if isinstance(c, ElasticSearchConnection)]
                named = service.connections.get(ElasticSearchConnection.__name__)
                if named is None and len(candidates) != 1:
                    raise self.Config.error("connection", f"names no connection and there are "
                                                          f"{len(candidates)} ElasticSearchConnections; name one")
                found = named or candidates[0]
            if not isinstance(found, ElasticSearchConnection):
                raise self.Config.error("connection", f"{found!r} is not an ElasticSearchConnection")
            self._connection = found
        return self._connection

    async def _client(self) -> Any:
        connection = self.es
        if not connection.ready:
            await connection.wait_ready(self.ready_timeout or None)
        return connection.client

    def _key(self, hit: Mapping[str, Any]) -> Any:
        if not self.key_field:
            return hit["_id"]
        try:
            return field_value(hit.get("_source", {}), self.key_field)
        except EncodeError:
            return None

    def _source(self, hit: Mapping[str, Any]) -> Any:
        return hit.get("_source", {})

    def _source_param(self) -> dict[str, Any]:
        if not self.source_fields:
            return {}
        includes = [*self.source_fields, *([self.key_field] if self.key_field else [])]
        return {"source_includes": includes}

    async def fetch(self, keys: Sequence[Any]) -> Mapping[Any, Any]:
        """The documents of ``keys``: a multi-get by ``_id``, or a terms query on ``key_field``."""
        client = await self._client()
        if not self.key_field:
            response = await client.mget(index=self.index, ids=[str(k) for k in keys], **self._source_param())
            return {doc["_id"]: self._source(doc) for doc in response["docs"] if doc.get("found")}
        params: dict[str, Any] = {"_source": self._source_param().get("source_includes", True)}
        response = await client.search(index=self.index, query={"terms": {self.key_field: list(keys)}},
                                       collapse={"field": self.key_field}, size=len(keys), **params)
        found: dict[Any, Any] = {}
        for hit in response["hits"]["hits"]:
            key = self._key(hit)
            if key is not None:
                found.setdefault(key, self._source(hit))
        return found

    async def load(self) -> Mapping[Any, Any]:
        """Every document of the index, paged on a point in time."""
        client = await self._client()
        count = int((await client.count(index=self.index))["count"])
        if count > self.max_documents:
            raise self.Config.error("max_documents", f"is {self.max_documents}, but {self.index!r} holds {count} "
                                                     "documents: raise it or use mode = on_demand")
        pit = str((await client.open_point_in_time(index=self.index, keep_alive="1m"))["id"])
        data: dict[Any, Any] = {}
        params: dict[str, Any] = {"_source": self._source_param().get("source_includes", True)}
        try:
            after: list[Any] | None = None
            while True:
                extra = {"search_after": after} if after is not None else {}
                response = await client.search(pit={"id": pit, "keep_alive": "1m"}, sort=[{"_shard_doc": "asc"}],
                                               size=1000, track_total_hits=False, **params, **extra)
                pit = response.get("pit_id", pit)
                hits = response["hits"]["hits"]
                for hit in hits:
                    key = self._key(hit)
                    if key is not None:
                        data.setdefault(key, self._source(hit))
                if len(hits) < 1000:
                    return data
                after = cast(list[Any], hits[-1]["sort"])
        finally:
            await client.close_point_in_time(id=pit)
