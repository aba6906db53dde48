"""MongoDBChangeStreamSource: a collection's, a database's or a deployment's change stream, resumed from the
token of the last acknowledged event."""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Mapping
from typing import Any, ClassVar

from bson import Timestamp
from pymongo.asynchronous.change_stream import AsyncChangeStream
from pymongo.errors import OperationFailure

import bspump
from bspump import ErrorKind
from bspump import context as keys
from bspump.config import Choice, Int, Seconds

from .connection import Document, MongoDBConnection
from .errors import CHANGE_STREAM_FATAL, HISTORY_LOST, ChangeStreamHistoryLostError
from .options import dump_bson, json_value, load_bson
from .positions import CheckpointInDeployment

log = logging.getLogger("bspump.mongodb")

#: The one partition of a change stream in the checkpoint.
STREAM = "stream"
#: Databases a deployment-wide snapshot leaves out (the server's own).
SYSTEM_DATABASES = frozenset({"admin", "config", "local"})


class MongoDBChangeStreamSource(CheckpointInDeployment, bspump.PositionedSource[str]):
    """Emits the change events (``insert``, ``update``, ``replace``, ``delete``, ``drop``, ``rename``...) of
    ``watch``: ``collection`` (``collection`` of ``database``), ``database`` (every collection of ``database``) or
    ``deployment`` (every database), each as PyMongo returns it (a dict with ``operationType``, ``ns``,
    ``documentKey``, ``fullDocument``...), filtered and shaped by ``pipeline`` (an aggregation pipeline as
    JSON, e.g. ``[{"$match": {"operationType": "insert"}}]``).

    ``full_document``: ``default`` (updates carry only their delta), ``updateLookup`` (updates carry the
    document as it is when read), ``whenAvailable`` or ``required`` (the post-image; the collection needs
    ``changeStreamPreAndPostImages``); ``full_document_before_change``: ``off``, ``whenAvailable`` or
    ``required`` (the pre-image). ``batch_size`` events at most per batch; ``max_await`` is how long one read
    waits for new events (a batch is handed over once the server has no more).

    Without a checkpoint, the stream starts now, or at ``start_at`` (a time still in the oplog: an ISO 8601
    date-time such as ``2026-11-30T06:00:00Z``, or seconds since the epoch), or with ``initial_snapshot``.

    At-least-once: the resume token of an event is checkpointed only once it and every event before it were
    acknowledged (every ``commit_interval`` and at stop); while no event is in flight, the server's
    post-batch token is checkpointed too, so that a quiet stream's checkpoint keeps up with the oplog.
    A restart resumes after the last acknowledged event. After an ``invalidate`` (the watched collection or
    database dropped or renamed; not emitted), the stream continues with ``startAfter``, so events of a
    recreated collection keep coming. The checkpoint collection's own changes are filtered out.

    ``on_history_lost`` decides what happens when the stored token is older than the server's oplog
    (``ChangeStreamHistoryLost``): ``fail`` (default) stops the pipeline (exit code 1) with an error naming
    the lost window; ``restart`` logs it loudly, re-reads every watched collection (events with
    ``operationType = "snapshot"`` and the document in ``fullDocument``) and then streams from a token taken
    before that snapshot started: duplicates, but no gap. ``initial_snapshot = true`` does the same snapshot
    on the first start (no checkpoint yet); its batches read ``snapshot_batch_size`` documents at a time, and
    the stream's token is checkpointed once the whole snapshot was acknowledged (a crash during it redoes it).
    """

    ConnectionType = MongoDBConnection
    ConfigDefaults: ClassVar[dict[str, Any]] = {
        "watch": Choice("collection", ("collection", "database", "deployment")),
        "database": "",
        "collection": "",
        "pipeline": "",
        "full_document": Choice("default", ("default", "updateLookup", "whenAvailable", "required")),
        "full_document_before_change": Choice("off", ("off", "whenAvailable", "required")),
        "batch_size": Int(1000, min=1, max=100_000),
        "max_await": Seconds(0.2, min=0.001, max=60.0),
        "on_history_lost": Choice("fail", ("fail", "restart")),
        "start_at": "",
        "initial_snapshot": False,
        "snapshot_batch_size": Int(1000, min=1, max=100_000),
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        assert isinstance(self.connection, MongoDBConnection)
        self.mongo: MongoDBConnection = self.connection
        config = self.Config
        self.scope = config.getchoice("watch")
        self.database_name: str = config.get("database") or self.mongo.default_database
        self.collection_name: str = config.get("collection")
        if self.scope == "collection" and not self.collection_name:
            raise config.error("collection", "watch = collection needs the collection to watch")
        self.user_pipeline: list[Any] = json_value(config, "pipeline", list,
                                                   '[{"$match": {"operationType": "insert"}}]') or []
        self.batch_size = config.getint("batch_size")
        self.max_await_ms = max(1, int(config.getseconds("max_await") * 1000))
        self.history_policy = config.getchoice("on_history_lost")
        self.start_at = _start_time(config)
        #: Where the next stream starts: ``{"token": <extended JSON>, "after": "resume" | "start", "time": ...}``.
        self.position: dict[str, Any] | None = None
        #: Events emitted, invalidations followed, snapshots taken (initial and after a lost history).
        self.invalidations = 0
        self.snapshots = 0
        self.history_lost = 0

    # -- the stream ---------------------------------------------------------------------------------------------
    def stream_pipeline(self) -> list[Any]:
        """The aggregation pipeline after ``$changeStream``: the user's, after a filter that drops the checkpoint
        collection's own changes when the watch covers it."""
        stages = list(self.user_pipeline)
        if self.Config.getchoice("checkpoint_store") == "collection" and self.scope != "collection":
            database, collection = self.checkpoint_namespace()
            stages.insert(0, {"$match": {"$or": [{"ns.db": {"$ne": database}}, {"ns.coll": {"$ne": collection}}]}})
        return stages

    async def open_stream(self, position: Mapping[str, Any] | None) -> AsyncChangeStream[Document]:
        """Open the change stream at ``position`` (``None``: now); called at start, after an invalidate and
        after an error that the connection classified as link or transient."""
        options: dict[str, Any] = {"max_await_time_ms": self.max_await_ms, "batch_size": self.batch_size}
        full = self.Config.getchoice("full_document")
        if full != "default":
            options["full_document"] = full
        before = self.Config.getchoice("full_document_before_change")
        if before != "off":
            options["full_document_before_change"] = before
        if position is not None:
            token = load_bson(position["token"])
            options["start_after" if position.get("after") == "start" else "resume_after"] = token
        elif self.start_at is not None:
            options["start_at_operation_time"] = self.start_at
        pipeline = self.stream_pipeline()
        if self.scope == "collection":
            return await self.mongo.collection(self.collection_name, self.database_name).watch(pipeline, **options)
        if self.scope == "database":
            return await self.mongo.database(self.database_name).watch(pipeline, **options)
        return await self.mongo.client.watch(pipeline, **options)

    async def main(self) -> None:
        stored = await self.start_client(self.load_positions, "reading the checkpoint")
        self.position = stored.get(STREAM)
        if self.position is None and self.Config.getboolean("initial_snapshot"):
            await self.snapshot(reason="initial snapshot")
        backoff = self.pipeline.retry_backoff()
        while True:
            try:
                stream = await self.start_client(lambda: self.open_stream(self.position), "opening the change stream")
                async with stream:
                    await self.read(stream)
                    backoff = self.pipeline.retry_backoff()
                continue  # invalidated: reopened with startAfter
            except asyncio.CancelledError:
                raise
            except OperationFailure as exc:
                if _history_lost(exc):
                    await self.on_history_lost(exc)
                    continue
                if self.classify(exc) is ErrorKind.PERMANENT:
                    raise
                error: Exception = exc
            except Exception as exc:
                if self.classify(exc) is ErrorKind.PERMANENT:
                    raise
                error = exc
            delay = backoff.next_delay()
            log.warning("%s: change stream failed (%s: %s); reopening after the last event read in %.2fs",
                        self.qualified_id, type(error).__name__, error, delay)
            if self.classify(error) is ErrorKind.LINK:
                self.mongo.report_failure(error)
            await asyncio.sleep(delay)

    async def read(self, stream: AsyncChangeStream[Document]) -> None:
        """Emit the stream's events in batches until it is invalidated (then return) or fails (raise)."""
        committed_token: Any = None
        while True:
            await self.wait_ready()
            events: list[Document] = []
            invalidate: Document | None = None
            while len(events) < self.batch_size:
                change = await stream.try_next()
                if change is None:
                    break
                if change.get("operationType") == "invalidate":
                    invalidate = change
                    break
                events.append(change)
            if events:
                last = events[-1]
                self.position = {"token": dump_bson(last["_id"]), "after": "resume", "time": _event_time(last)}
                delivery = self.track({STREAM: self.position})
                await self.emit(events, {keys.SOURCE: self.qualified_id}, delivery=delivery)
            if invalidate is not None:
                self.invalidations += 1
                log.warning("%s: the change stream was invalidated (the watched %s was dropped or renamed); "
                            "continuing after it with startAfter", self.qualified_id, self.scope)
                self.position = {"token": dump_bson(invalidate["_id"]), "after": "start",
                                 "time": _event_time(invalidate)}
                self.track({STREAM: self.position}).seal()
                await self.maybe_commit()
                return
            if not events:
                token = stream.resume_token
                if token is not None and token != committed_token and self.tracker.pending() == 0:
                    # Nothing in flight: the post-batch token is as good as the last event's, and newer.
                    committed_token = token
                    self.position = {"token": dump_bson(token), "after": "resume",
                                     "time": (self.position or {}).get("time")}
                    self.track({STREAM: self.position}).seal()
            await self.maybe_commit()

    # -- lost history and snapshots -----------------------------------------------------------------------------
    async def on_history_lost(self, error: OperationFailure) -> None:
        """The stored token is older than the oplog: fail (raise, naming the lost window) or snapshot again."""
        self.history_lost += 1
        since = (self.position or {}).get("time") or "the last checkpoint"
        oldest = await self.oldest_change()
        window = f"from {since} to {oldest or 'the oldest change the server still keeps'}"
        if self.history_policy == "fail":
            raise ChangeStreamHistoryLostError(
                f"{self.qualified_id}: cannot resume the change stream: the server no longer holds the changes "
                f"after the last acknowledged event; changes {window} are lost (server: {error.code} "
                f"{error.details.get('codeName', '') if error.details else ''}). Set on_history_lost = restart to "
                "re-read the watched collections and stream on (duplicates, no gap)") from None
        log.error("%s: CHANGE STREAM HISTORY LOST: changes %s are gone from the oplog; on_history_lost = restart: "
                  "re-reading every watched collection, then streaming on (events will repeat; none are missing)",
                  self.qualified_id, window)
        await self.snapshot(reason="history lost")

    async def oldest_change(self) -> str | None:
        """The time of the oldest oplog entry, if this user may read ``local.oplog.rs``."""
        try:
            entry = await self.mongo.client.local["oplog.rs"].find_one({}, sort=[("$natural", 1)])
        except Exception:
            return None
        ts = entry.get("ts") if entry else None
        return _timestamp_text(ts) if ts is not None else None

    async def snapshot(self, reason: str) -> None:
        """Read every watched collection as ``snapshot`` events, after taking the stream's current token; that
        token becomes the position once the whole snapshot was acknowledged."""
        self.snapshots += 1
        previous = self.position
        stream = await self.start_client(lambda: self.open_stream(None), "opening the change stream")
        async with stream:
            token = stream.resume_token
            if token is None:  # the first batch already held events: the snapshot starts after the first
                first = await stream.try_next()
                token = first["_id"] if first is not None else stream.resume_token
        started = {"token": dump_bson(token), "after": "resume", "time": None}
        log.info("%s: %s of the watched %s", self.qualified_id, reason, self.scope)
        size = self.Config.getint("snapshot_batch_size")
        total = 0
        for database, collection in await self.start_client(self.watched_collections, "listing collections"):
            cursor = self.mongo.collection(collection, database).find({}, batch_size=size, sort=[("_id", 1)])
            events: list[Document] = []
            async for document in cursor:
                events.append({"operationType": "snapshot", "ns": {"db": database, "coll": collection},
                               "documentKey": {"_id": document.get("_id")}, "fullDocument": document})
                if len(events) >= size:
                    total += await self._emit_snapshot(events, previous)
                    events = []
            if events:
                total += await self._emit_snapshot(events, previous)
        self.position = started
        self.track({STREAM: started}).seal()
        await self.maybe_commit()
        log.info("%s: %s done: %d documents; streaming from before it", self.qualified_id, reason, total)

    async def _emit_snapshot(self, events: list[Document], previous: dict[str, Any] | None) -> int:
        # Tracked under the previous position: a restart during the snapshot starts it again.
        await self.wait_ready()
        delivery = self.track({STREAM: previous})
        await self.emit(events, {keys.SOURCE: self.qualified_id}, delivery=delivery)
        await self.maybe_commit()
        return len(events)

    async def watched_collections(self) -> list[tuple[str, str]]:
        """``(database, collection)`` of every collection the stream watches (without ``system.*`` and the
        checkpoint collection)."""
        if self.scope == "collection":
            return [(self.database_name, self.collection_name)]
        client = self.mongo.client
        databases = [self.database_name] if self.scope == "database" else \
            [name for name in await client.list_database_names() if name not in SYSTEM_DATABASES]
        checkpoint = self.checkpoint_namespace() if self.Config.getchoice("checkpoint_store") == "collection" \
            else None
        found = []
        for database in databases:
            for name in sorted(await client[database].list_collection_names()):
                if not name.startswith("system.") and (database, name) != checkpoint:
                    found.append((database, name))
        return found

    def gauges(self) -> Mapping[str, float]:
        return {"invalidations": self.invalidations, "snapshots": self.snapshots,
                "history_lost": self.history_lost}


def _start_time(config: Any) -> Timestamp | None:
    text = str(config.get("start_at") or "").strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise config.error("start_at", "expected an ISO 8601 date-time (2026-11-30T06:00:00Z) or seconds "
                                           "since the epoch") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        seconds = moment.timestamp()
    return Timestamp(int(seconds), 0)


def _history_lost(error: OperationFailure) -> bool:
    if error.code == HISTORY_LOST:
        return True
    # Older servers report a resume point that fell off the oplog as a fatal change stream error.
    return error.code == CHANGE_STREAM_FATAL and "no longer be in the oplog" in str(error)


def _event_time(event: Mapping[str, Any]) -> str | None:
    wall = event.get("wallTime")
    if wall is not None and hasattr(wall, "isoformat"):
        return str(wall.isoformat())
    cluster = event.get("clusterTime")
    return _timestamp_text(cluster) if cluster is not None else None


def _timestamp_text(ts: Any) -> str:
    as_datetime = getattr(ts, "as_datetime", None)
    return str(as_datetime().isoformat()) if as_datetime is not None else str(ts)
