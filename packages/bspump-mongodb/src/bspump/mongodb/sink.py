"""MongoDBSink: events written with unordered bulk writes, each item's result mapped to the error policy."""

from __future__ import annotations

import datetime
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import bson
from bson.errors import InvalidDocument
from pymongo import DeleteOne, InsertOne, ReplaceOne, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DocumentTooLarge, WriteConcernError

import bspump
from bspump import ErrorKind, ItemFailure
from bspump.batch import Batch
from bspump.config import Choice
from bspump.context import DEAD_LETTER_KEYS

from .connection import Document, MongoDBConnection
from .errors import DUPLICATE_KEY, ItemWriteError

log = logging.getLogger("bspump.mongodb")

Request = InsertOne[Document] | ReplaceOne[Document] | UpdateOne | DeleteOne
OPERATIONS = ("insert", "replace", "upsert", "update")
#: Change events that change no document (the stream's own notices): acknowledged without a write.
_NO_WRITE = frozenset({"drop", "rename", "dropDatabase", "invalidate", "create", "createIndexes", "dropIndexes",
                       "modify", "shardCollection", "refineCollectionShardKey", "reshardCollection"})


class MissingKeyError(bspump.BSPumpError):
    """An event lacks the field the sink writes by (``key``), or a change event lacks ``documentKey``."""


class MongoDBSink(bspump.AsyncSink):
    """Writes each batch to ``collection`` (of ``database``, default the connection's) with one unordered
    ``bulk_write``, and acknowledges an event once the server confirmed it under the connection's write
    concern (``majority`` on a replica set by default).

    ``operation`` says what each event (a document) becomes:

    - ``insert`` (default): inserted. A duplicate key error for an event whose identical document (same
      ``_id``, same content) is already stored means it was written before (an earlier attempt, a source that
      delivers at least once): with ``duplicate_key`` = ``written`` (default) it counts as written (``duplicates``
      counts them). A duplicate that differs from what is stored, or any duplicate with ``fail``, meets the
      error policy like any other refused item.
    - ``replace``: replaces the document whose ``key`` field (default ``_id``) equals the event's, inserting
      it when there is none (idempotent).
    - ``upsert``: sets the event's fields on the document with the event's ``key`` (``$set``), creating it
      when there is none.
    - ``update``: like ``upsert`` but only for documents that exist (``unmatched`` counts the others).

    ``events``: ``documents`` (default) or ``change_events``. With ``change_events`` the events are
    change-stream events (from :class:`~bspump.mongodb.MongoDBChangeStreamSource`): inserts, replacements,
    snapshot reads and updates that carry ``fullDocument`` replace the document by its ``documentKey``
    (upsert), other updates apply ``updatedFields``/``removedFields``, and deletes delete it; notices that
    change no document (drop, rename, invalidate...) are acknowledged without a write. ``operation`` is then not used.

    As a pipeline's dead-letter sink it inserts, for each event, ``{"event": <the event>, "error": ...,
    "error_type": ..., "error_component": ..., "error_pipeline": ..., "at": <UTC time>}`` (an event that does not
    encode as BSON is kept as ``{"unencodable": <its type>}``), whatever ``operation`` and ``events`` say.

    One bad event never costs the rest of its batch: the server's per-item errors go to the pipeline's error
    policy (dead letter with the server's message; duplicate keys, validation failures, bad field names are
    permanent), transient ones (write conflicts) are retried, and a write concern error retries the batch
    (writes are idempotent, so a retry never duplicates). Events that cannot be encoded as BSON are found
    one by one, and the others written. ``concurrency`` stays 1 by default: two batches in flight could apply
    two changes of one document out of order.
    """

    ConnectionType = MongoDBConnection
    ConfigRequired: ClassVar[tuple[str, ...]] = ("collection",)
    ConfigDefaults: ClassVar[dict[str, Any]] = {
        "database": "",
        "collection": "",
        "operation": Choice("insert", OPERATIONS),
        "key": "_id",
        "events": Choice("documents", ("documents", "change_events")),
        "duplicate_key": Choice("written", ("written", "fail")),
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        assert isinstance(self.connection, MongoDBConnection)
        self.mongo: MongoDBConnection = self.connection
        config = self.Config
        self.database_name: str | None = config.get("database") or None
        self.collection_name: str = config.get("collection")
        self.operation = config.getchoice("operation")
        self.key: str = config.get("key") or "_id"
        self.change_events = config.getchoice("events") == "change_events"
        self.duplicates_written = config.getchoice("duplicate_key") == "written"
        #: Inserts refused as duplicates and counted as written (``duplicate_key = written``).
        self.duplicates = 0
        #: ``update`` events (and change-event updates) whose document did not exist.
        self.unmatched = 0
        #: Change events acknowledged without a write (drop, rename, invalidate...).
        self.notices = 0

    def target(self) -> AsyncCollection[Document]:
        """The collection written to; called for every batch (the connection's client may be a new one)."""
        return self.mongo.collection(self.collection_name, self.database_name)

    # -- building requests ------------------------------------------------------------------------------------
    def request(self, event: Any) -> Request | None:
        """The write for one event, or ``None`` when it needs none; raise for an event that cannot be written.
        Called for every event of every batch (not for plain inserts, which go to ``insert_many``)."""
        if self.change_events:
            return self.change_request(event)
        if not isinstance(event, Mapping):
            raise TypeError(f"{type(self).__name__} writes documents (mappings), got {type(event).__name__}")
        if self.operation == "insert":  # written with insert_many by write(); here for subclasses
            return InsertOne(event)  # type: ignore[arg-type]
        if self.key not in event:
            raise MissingKeyError(f"event has no {self.key!r} field (the sink's key)")
        selector = {self.key: event[self.key]}
        if self.operation == "replace":
            return ReplaceOne(selector, event, upsert=True)  # type: ignore[arg-type]
        fields = {k: v for k, v in event.items() if k != "_id"}
        return UpdateOne(selector, {"$set": fields}, upsert=self.operation == "upsert")

    def change_request(self, event: Any) -> Request | None:
        """The write that applies one change-stream event to the target collection."""
        if not isinstance(event, Mapping):
            raise TypeError(f"events = change_events expects change events (mappings), got {type(event).__name__}")
        operation = event.get("operationType")
        if operation in _NO_WRITE:
            return None
        selector = event.get("documentKey")
        if not isinstance(selector, Mapping) or not selector:
            raise MissingKeyError(f"{operation!r} change event has no documentKey")
        full = event.get("fullDocument")
        if operation in ("insert", "replace", "snapshot", "update") and isinstance(full, Mapping):
            return ReplaceOne(dict(selector), full, upsert=True)  # type: ignore[arg-type]
        if operation == "update":
            description = event.get("updateDescription") or {}
            update: dict[str, Any] = {}
            if description.get("updatedFields"):
                update["$set"] = dict(description["updatedFields"])
            if description.get("removedFields"):
                update["$unset"] = dict.fromkeys(description["removedFields"], "")
            return UpdateOne(dict(selector), update) if update else None
        if operation == "delete":
            return DeleteOne(dict(selector))
        raise ValueError(f"cannot apply a {operation!r} change event without fullDocument")

    def dead_letter(self, context: Mapping[str, Any], event: Any) -> Document:
        """The document that records one dead letter (when this sink is a pipeline's dead-letter sink)."""
        try:
            bson.encode({"event": event})
            kept = event
        except Exception:
            kept = {"unencodable": type(event).__name__}
        letter: Document = {"event": kept, "at": datetime.datetime.now(datetime.UTC)}
        for key in DEAD_LETTER_KEYS:
            if key in context:
                letter[key] = context[key]
        return letter

    async def write_dead_letters(self, batch: Batch) -> Sequence[ItemFailure] | None:
        """Insert the batch's dead letters; a letter whose event the server refuses too (a field name it does
        not take) is stored again with only the event's type, so that the error is never lost."""
        letters = [self.dead_letter(context, event) for context, event in batch]
        failures = await self._bulk(letters, True, None)
        if not failures:
            return None
        retry = [f.index for f in failures]
        for index in retry:
            letters[index] = {**letters[index], "event": {"unstorable": type(batch.events[index]).__name__}}
        again = await self._bulk([letters[i] for i in retry], True, None)
        return [ItemFailure(retry[f.index], f.error, f.kind) for f in again] or None

    # -- writing ----------------------------------------------------------------------------------------------
    async def write(self, batch: Batch) -> Sequence[ItemFailure] | None:
        """One unordered bulk write of the batch; called by the writer task once the connection is ready."""
        failures: list[ItemFailure] = []
        if self.is_dead_letter:
            return await self.write_dead_letters(batch)
        if not self.change_events and self.operation == "insert":
            documents = batch.events
            owners: list[int] | None = None
            requests: list[Request] | None = None
        else:
            requests, owners = [], []
            for index, event in enumerate(batch.events):
                try:
                    request = self.request(event)
                except Exception as exc:
                    failures.append(ItemFailure(index, exc, ErrorKind.PERMANENT))
                    continue
                if request is None:
                    self.notices += 1
                else:
                    requests.append(request)
                    owners.append(index)
            if not requests:
                return failures
        try:
            failures.extend(await self._bulk(documents if requests is None else requests, requests is None, owners))
        except (InvalidDocument, TypeError) as exc:
            # Raised while encoding, before or between the server's batches: find the culprits, write the rest.
            log.debug("%s: a batch does not encode (%s); checking its events one by one", self.qualified_id, exc)
            failures.extend(await self._write_encodable(batch, failures))
        return failures or None

    async def _bulk(self, operations: Sequence[Any], inserts: bool, owners: list[int] | None) -> list[ItemFailure]:
        """Run one unordered insert_many or bulk_write; map the server's item errors to the batch's indexes."""
        collection = self.target()
        try:
            if inserts:
                await collection.insert_many(operations, ordered=False)
            else:
                result = await collection.bulk_write(list(operations), ordered=False)
                self._count_unmatched(operations, result.matched_count, result.upserted_count)
            return []
        except BulkWriteError as exc:
            return await self._item_failures(exc, operations, inserts, owners)

    def _count_unmatched(self, operations: Sequence[Any], matched: int, upserted: int) -> None:
        updates = sum(1 for op in operations if isinstance(op, UpdateOne | ReplaceOne))
        if updates > matched + upserted:
            self.unmatched += updates - matched - upserted

    async def _item_failures(self, error: BulkWriteError, operations: Sequence[Any], inserts: bool,
                       owners: list[int] | None) -> list[ItemFailure]:
        details = error.details or {}
        concern = details.get("writeConcernErrors") or ()
        if concern:
            # Written, but not confirmed as durable as asked: the whole batch is retried (idempotently).
            first = concern[0]
            raise WriteConcernError(first.get("errmsg", "write concern error"), first.get("code"), first)
        failures = []
        replays: list[tuple[int, Mapping[str, Any], dict[str, Any]]] = []
        for item in details.get("writeErrors", ()):
            position = int(item["index"])
            code = item.get("code")
            index = position if owners is None else owners[position]
            if code in DUPLICATE_KEY and inserts and self.duplicates_written:
                document = operations[position]
                if isinstance(document, Mapping) and "_id" in document:
                    replays.append((index, document, item))
                    continue
            failures.append(ItemFailure(index, ItemWriteError(item)))
        if replays:
            failures.extend(await self._replays(replays))
        return failures

    async def _replays(self, replays: list[tuple[int, Mapping[str, Any], dict[str, Any]]]) -> list[ItemFailure]:
        """Duplicate inserts: written if the stored document with the same ``_id`` equals the event (a replay),
        failures otherwise (a conflict with another document). One read for the batch, only when it had any."""
        ids = [document["_id"] for _, document, _ in replays]
        stored = {doc["_id"]: doc async for doc in self.target().find({"_id": {"$in": ids}})}
        failures = []
        for index, document, item in replays:
            if stored.get(document["_id"]) == dict(document):
                self.duplicates += 1
            else:
                failures.append(ItemFailure(index, ItemWriteError(item)))
        return failures

    async def _write_encodable(self, batch: Batch, known: list[ItemFailure]) -> list[ItemFailure]:
        """Write the events of ``batch`` that encode as BSON within the server's size limit; a failure each for
        the others. Called after the batch failed to encode as a whole (rare: it costs an encoding each)."""
        skip = {failure.index for failure in known}
        failures: list[ItemFailure] = []
        good: list[int] = []
        limit = self.mongo.max_document_size
        for index, event in enumerate(batch.events):
            if index in skip:
                continue
            try:
                document = event.get("fullDocument", event) if self.change_events else event
                size = len(bson.encode(document))
                if size > limit:
                    raise DocumentTooLarge(f"document of {size} bytes exceeds the server's limit of {limit}")
            except Exception as exc:
                failures.append(ItemFailure(index, _without_values(exc), ErrorKind.PERMANENT))
                continue
            good.append(index)
        if good:
            part = await self.write(batch.subset(good))
            failures.extend(ItemFailure(good[f.index], f.error, f.kind) for f in part or ())
        return failures

    def gauges(self) -> Mapping[str, float]:
        return {"duplicates": self.duplicates, "unmatched": self.unmatched, "notices": self.notices}



def _without_values(error: Exception) -> Exception:
    """The encoder quotes the value it cannot encode, which may be anything (a secret): keep only its type."""
    found = re.search(r"of type: <class '([^']+)'>", str(error))
    if isinstance(error, InvalidDocument) and found:
        return InvalidDocument(f"cannot encode a value of type {found.group(1)} as BSON")
    return error
