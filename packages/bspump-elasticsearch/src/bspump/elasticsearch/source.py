"""ElasticSearchSource: a query read in sorted batches, resumable, optionally following new documents."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, cast

import orjson

import bspump
from bspump import context as keys
from bspump.config import Int, Seconds

from .actions import EncodeError, field_value
from .connection import ElasticSearchConnection

if TYPE_CHECKING:
    from bspump import BSPumpApplication, Pipeline

log = logging.getLogger("bspump.elasticsearch")

#: Answers of a server without point-in-time support (or an alias/pattern it cannot open one on).
_NO_PIT_STATUSES = frozenset({400, 404, 405})


class ElasticSearchSource(bspump.PositionedSource[str]):
    """Reads the documents of ``index`` (a name, pattern or alias) that match ``query``, in ascending order
    of ``sort_field``, ``batch_size`` documents per batch; emits each document's ``_source``.

    Order and position: documents are sorted by ``sort_field`` (an increasing field such as ``@timestamp``
    or a sequence number) then ``tiebreaker_field`` (a field with a unique value per document, e.g. an
    event id of keyword type); with ``point_in_time`` (default on) the read runs on a point in time kept
    alive for ``keep_alive`` seconds between batches, so that it sees one consistent snapshot, and pages
    with ``search_after`` (where the server has no point in time, plain ``search_after``). The position,
    checkpointed through the application's checkpoint store once every document up to it was
    acknowledged, is the pair of those two fields' values of the last document; a restarted source
    continues after it. Without a ``tiebreaker_field`` it continues from documents whose ``sort_field``
    equals the last one's (those are read again rather than lost: at least once).

    ``follow`` (default off): after the matching documents are read, ask again every ``poll_interval``
    seconds for documents after the position (new documents with a higher ``sort_field``) and never end;
    otherwise the source ends once everything was read. ``query`` is a query in Elasticsearch's JSON DSL
    (text in pipelines.conf, or a dict; default ``match_all``). ``commit_interval`` says how often
    positions are saved.

    Each event's context holds ``topic`` (the document's index), ``key`` (its ``_id``) and ``offset`` (its
    sort values), so a pipeline into :class:`ElasticSearchSink` derives stable ids from them.
    """

    ConnectionType = ElasticSearchConnection
    ConfigDefaults: ClassVar[dict[str, Any]] = {
        "index": "",
        "query": "",
        "sort_field": "",
        "tiebreaker_field": "",
        "batch_size": Int(1000, min=1, max=10000),
        "point_in_time": True,
        "keep_alive": Seconds(60.0, min=1.0, max=86400.0),
        "follow": False,
        "poll_interval": Seconds(5.0, min=0.01, max=86400.0),
    }

    def __init__(
        self,
        app: BSPumpApplication,
        pipeline: Pipeline,
        id: str | None = None,
        config: Mapping[str, Any] | None = None,
        connection: str | None = None,
    ) -> None:
        super().__init__(app, pipeline, id=id, config=config, connection=connection)
        assert isinstance(self.connection, ElasticSearchConnection)  # ConnectionType: checked by the base
        self.es = self.connection
        config = self.Config
        self.index = str(config.get("index") or "").strip()
        if not self.index:
            raise config.error("index", "is required: the index, pattern or alias to read")
        self.sort_field = str(config.get("sort_field") or "").strip()
        if not self.sort_field:
            raise config.error("sort_field", "is required: an increasing field to read in order of (e.g. @timestamp)")
        self.tiebreaker_field = str(config.get("tiebreaker_field") or "").strip()
        self.query = self._parse_query(config.get("query"))
        self.batch_size = config.getint("batch_size")
        self.use_pit = config.getboolean("point_in_time")
        self.keep_alive = f"{max(1, round(config.getseconds('keep_alive')))}s"
        self.follow = config.getboolean("follow")
        self.poll_interval = config.getseconds("poll_interval")
        #: The sort-field values of the last document read (not necessarily acknowledged yet).
        self.cursor: list[Any] | None = None
        #: Search requests made.
        self.searches = 0

    def _parse_query(self, value: Any) -> dict[str, Any]:
        if value is None or value == "":
            return {"match_all": {}}
        if isinstance(value, Mapping):
            return dict(value)
        try:
            query = orjson.loads(str(value))
        except orjson.JSONDecodeError as exc:
            raise self.Config.error("query", f"is not JSON: {exc}") from None
        if not isinstance(query, dict):
            raise self.Config.error("query", "must be a JSON object, e.g. {\"term\": {\"level\": \"error\"}}")
        return query

    @property
    def sort_fields(self) -> list[str]:
        return [self.sort_field, *([self.tiebreaker_field] if self.tiebreaker_field else [])]

    # -- reading ------------------------------------------------------------------------------------------
    async def main(self) -> None:
        """Resume after the committed position, read everything, then (``follow``) poll for more."""
        stored = await self.load_positions()
        position = stored.get(self.index)
        self.cursor = list(position) if isinstance(position, list) else None
        while True:
            if not await self.read_pass():
                continue  # the point in time expired (a long outage or pause): a new pass from the cursor
            if not self.follow:
                return
            await asyncio.sleep(self.poll_interval)

    async def read_pass(self) -> bool:
        """Read every matching document after :attr:`cursor`, on a point in time where possible; False when
        the point in time expired before the end (the caller starts a new pass from the cursor)."""
        from elasticsearch import ApiError  # not at module level: see errors.classify_es_error

        pit = await self.start_client(self._open_pit, "opening a point in time") if self.use_pit else None
        query = self._query_after()
        try:
            after: list[Any] | None = None  # the full sort values of the last hit, within this pass
            while True:
                await self.wait_ready()
                body = self._search_body(query, pit, after)
                try:
                    response = await self.start_client(functools.partial(self._search, body), "a search")
                except ApiError as exc:
                    if pit is None or int(exc.status_code) != 404:
                        raise
                    log.warning("%s: the point in time expired (%s); continuing on a new one", self.qualified_id,
                                exc.error)
                    pit = None  # nothing to close
                    return False
                if pit is not None:
                    pit = response.get("pit_id", pit)
                hits = response["hits"]["hits"]
                if not hits:
                    return True
                await self._emit_hits(hits)
                after = hits[-1]["sort"]
                if len(hits) < self.batch_size:
                    return True
        finally:
            if pit is not None:
                await self._close_pit(pit)

    async def _emit_hits(self, hits: list[dict[str, Any]]) -> None:
        events = [hit.get("_source", {}) for hit in hits]
        contexts = [{keys.SOURCE: self.id, keys.TOPIC: hit.get("_index"), keys.KEY: hit.get("_id"),
                     keys.OFFSET: hit.get("sort")} for hit in hits]
        last = events[-1]
        try:
            cursor = [field_value(last, name) for name in self.sort_fields]
        except EncodeError as exc:
            raise RuntimeError(f"{self.qualified_id}: document {hits[-1].get('_id')!r} of "
                               f"{hits[-1].get('_index')!r} has no value to continue after ({exc}); every "
                               "document must hold sort_field (and tiebreaker_field)") from None
        delivery = self.track({self.index: cursor})
        await self.emit(events, contexts=contexts, delivery=delivery)
        self.cursor = cursor
        await self.maybe_commit()

    def _search_body(self, query: dict[str, Any], pit: str | None, after: list[Any] | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "query": query,
            "sort": [{name: {"order": "asc"}} for name in self.sort_fields],
            "size": self.batch_size,
            "track_total_hits": False,
        }
        if pit is not None:
            body["pit"] = {"id": pit, "keep_alive": self.keep_alive}
        if after is not None:
            body["search_after"] = after
        return body

    def _query_after(self) -> dict[str, Any]:
        """``query``, restricted to documents after :attr:`cursor` (a filter, so it also holds on a new
        point in time and across restarts)."""
        cursor = self.cursor
        if cursor is None:
            return self.query
        if self.tiebreaker_field and len(cursor) == 2:
            value, tiebreak = cursor
            after: dict[str, Any] = {"bool": {"minimum_should_match": 1, "should": [
                {"range": {self.sort_field: {"gt": value}}},
                {"bool": {"filter": [{"range": {self.sort_field: {"gte": value, "lte": value}}},
                                     {"range": {self.tiebreaker_field: {"gt": tiebreak}}}]}},
            ]}}
        else:
            after = {"range": {self.sort_field: {"gte": cursor[0]}}}
        return {"bool": {"must": [self.query], "filter": [after]}}

    # -- client calls -------------------------------------------------------------------------------------
    async def _open_pit(self) -> str | None:
        from elasticsearch import ApiError

        try:
            response = await self.es.client.open_point_in_time(index=self.index, keep_alive=self.keep_alive)
        except ApiError as exc:
            if int(exc.status_code) not in _NO_PIT_STATUSES:
                raise
            log.info("%s: no point in time on %r (%s); reading with search_after alone", self.qualified_id,
                     self.index, exc.status_code)
            self.use_pit = False
            return None
        return str(response["id"])

    async def _search(self, body: dict[str, Any]) -> dict[str, Any]:
        self.searches += 1
        client = self.es.client
        if "pit" in body:
            response = await client.search(**body)
        else:
            response = await client.search(index=self.index, **body)
        return cast(dict[str, Any], response.body)

    async def _close_pit(self, pit: str) -> None:
        try:
            await self.es.client.close_point_in_time(id=pit)
        except Exception as exc:  # it expires after keep_alive anyway
            log.debug("%s: closing a point in time failed: %s", self.qualified_id, exc)
