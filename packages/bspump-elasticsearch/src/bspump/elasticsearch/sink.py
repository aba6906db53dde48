"""ElasticSearchSink: bulk writes, every item of every response classified, acknowledged only when confirmed."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, cast

import bspump
from bspump.config import Choice, Int, Seconds
from bspump.failures import ErrorKind
from elasticsearch import ApiError

from .actions import OP_TYPES, ActionSpec, EncodeError, IndexName, encode_actions
from .connection import ElasticSearchConnection
from .errors import BulkItemError

if TYPE_CHECKING:
    from bspump import BSPumpApplication, Pipeline

log = logging.getLogger("bspump.elasticsearch")

REFRESH = ("false", "true", "wait_for")
#: What the sink reads of a bulk response; everything else (``took``, versions, shard counts) stays on the server.
FILTER_PATH = "errors,items.*.status,items.*.error,items.*._id,items.*._index"
#: The smallest request body the sink shrinks to after 413 answers (one action is always sent alone anyway).
MIN_REQUEST_BYTES = 1024


class EncodedBatch(bspump.Batch):
    """A batch with each event's NDJSON lines (or why it has none), encoded once when it was put.

    Encoding once keeps ``_id``s stable when only some events are sent again: ids derived from a shared
    source position are numbered within the batch as put.
    """

    __slots__ = ("lines",)

    def __init__(self, batch: bspump.Batch, lines: list[bytes | EncodeError]) -> None:
        super().__init__(batch.events, batch.delivery, batch.context, batch.contexts, batch.counters)
        self.lines = lines

    def subset(self, indexes: list[int]) -> EncodedBatch:
        part = bspump.Batch.subset(self, indexes)
        return EncodedBatch(part, [self.lines[i] for i in indexes])


class ElasticSearchSink(bspump.AsyncSink):
    """Writes events with bulk requests and acknowledges each one once the cluster confirmed it.

    Where: ``index`` is a fixed name or a template: ``{%Y.%m.%d}`` formats the event's ``timestamp_field``
    (default ``@timestamp``: epoch seconds or milliseconds, ISO 8601 text or a datetime; the time of writing
    when the event has none) in UTC, ``{field}`` inserts a field of the event (``logs-{service}-{%Y.%m}``).
    ``data_stream`` (true) writes to a data stream (``index`` names it; only ``op_type`` ``create``, which
    it then defaults to).

    What: ``op_type`` ``auto`` (the default: ``create`` for a data stream, else ``index``), ``index`` (create
    or replace), ``create`` (only if absent: an existing document, a
    409, counts as written, so a retried or replayed event is not an error), ``update`` (merge the event
    into the document, ``retry_on_conflict`` times on concurrent changes), ``upsert`` (update, or create
    from the event) or ``delete``. Document ``_id``: the event's ``id_field`` when set; otherwise, with
    ``id_from_position`` (default on), derived from where the source read the event (its context's
    position: topic, partition, offset, path, line...) so that retries and replays overwrite instead of
    duplicating; otherwise Elasticsearch generates one. ``routing_field`` routes by a field of the event;
    ``pipeline`` names an ingest pipeline; ``refresh`` (``false``, ``true``, ``wait_for``) makes writes
    visible to searches before they are acknowledged (costly: tests and low-volume indices only).

    How much: each batch is sent in bulk requests of at most ``bulk_max_actions`` events and
    ``bulk_max_bytes`` bytes of body; ``concurrency`` batches are in flight at once, acknowledged in order.
    A 413 (request too large) or a 429 for the whole request halves both limits and sends again (split
    requests at once after a 413, after the retry backoff after a 429); each request that then succeeds
    raises them again by a tenth of the configured values. ``request_timeout`` (seconds, 0: the
    connection's) bounds each bulk request.

    Every item of every response is classified: a 2xx (or a 404 on ``delete``: already gone) is written;
    429 and 5xx are retried with the pipeline's retry backoff and jitter for up to ``retry_timeout``
    seconds (default 0: for as long as it takes; the events stay in flight meanwhile, so the pipeline
    slows down instead of losing them); mapping and parse errors and the other 4xx meet the pipeline's
    error policy with their status and reason (``error`` of a dead letter reads ``400
    document_parsing_exception: ...``). A network error retries the whole request after the connection
    reconnected. Nothing is acknowledged that the cluster did not confirm.
    """

    ConnectionType = ElasticSearchConnection
    ConfigDefaults: ClassVar[dict[str, Any]] = {
        "index": "",
        "timestamp_field": "@timestamp",
        "data_stream": False,
        "op_type": Choice("auto", ("auto", *OP_TYPES)),
        "id_field": "",
        "id_from_position": True,
        "routing_field": "",
        "pipeline": "",
        "refresh": Choice("false", REFRESH),
        "retry_on_conflict": Int(3, min=0, max=100),
        "bulk_max_actions": Int(1000, min=1, max=1_000_000),
        "bulk_max_bytes": Int(5 * 1024 * 1024, min=MIN_REQUEST_BYTES, max=2**31 - 1),
        "request_timeout": Seconds(0.0, min=0.0, max=3600.0),
        "concurrency": Int(2, min=1, max=256),
        "retry_timeout": Seconds(0.0, min=0.0),
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
        template = str(config.get("index") or "").strip()
        if not template:
            raise config.error("index", "is required: an index name or a template such as logs-{%Y.%m.%d}")
        try:
            index = IndexName(template, str(config.get("timestamp_field") or "@timestamp"))
        except ValueError as exc:
            raise config.error("index", str(exc)) from None
        self.data_stream = config.getboolean("data_stream")
        op_type = config.getchoice("op_type")
        if op_type == "auto":
            op_type = "create" if self.data_stream else "index"
        if self.data_stream and op_type != "create":
            raise config.error("op_type", f"is {op_type}, but a data stream only takes op_type = create")
        self.spec = ActionSpec(
            op_type=op_type,
            index=index,
            id_field=str(config.get("id_field") or ""),
            id_from_position=config.getboolean("id_from_position"),
            routing_field=str(config.get("routing_field") or ""),
            retry_on_conflict=config.getint("retry_on_conflict"),
        )
        self.ingest_pipeline = str(config.get("pipeline") or "")
        self.refresh = config.getchoice("refresh")
        self.request_timeout = config.getseconds("request_timeout")
        self.max_actions = config.getint("bulk_max_actions")
        self.max_bytes = config.getint("bulk_max_bytes")
        #: The limits in force: halved by 413 and whole-request 429 answers, raised again by successes.
        self.limit_actions = self.max_actions
        self.limit_bytes = self.max_bytes
        #: Bulk requests sent, those that failed as a whole (no answer, or an error status), and those the
        #: cluster refused with 413 or 429 (which shrink the limits).
        self.requests = 0
        self.request_errors = 0
        self.shrinks = 0

    # -- framework API ------------------------------------------------------------------------------------
    def put(self, batch: bspump.Batch) -> None:
        """Encode the batch once (see :class:`EncodedBatch`), then queue it for the writer."""
        contexts = batch.contexts if batch.contexts is not None else [batch.context] * len(batch.events)
        super().put(EncodedBatch(batch, encode_actions(self.spec, batch.events, contexts)))

    async def write(self, batch: bspump.Batch) -> Sequence[bspump.ItemFailure] | None:
        """Send the batch's events in bulk requests within the limits; the failures of those not written."""
        if isinstance(batch, EncodedBatch):
            lines = batch.lines
        else:  # put by something other than put(): encode here
            contexts = batch.contexts if batch.contexts is not None else [batch.context] * len(batch.events)
            lines = encode_actions(self.spec, batch.events, contexts)
        failures: list[bspump.ItemFailure] = []
        ready: list[int] = []
        for index, line in enumerate(lines):
            if isinstance(line, EncodeError):
                failures.append(bspump.ItemFailure(index, line, ErrorKind.PERMANENT))
            else:
                ready.append(index)
        for chunk in self._chunks(ready, lines):
            failures.extend(await self._send(chunk, lines))
        return failures or None

    # -- bulk requests ------------------------------------------------------------------------------------
    def _chunks(self, indexes: list[int], lines: Sequence[bytes | EncodeError]) -> Iterator[list[int]]:
        """``indexes`` in runs that fit the limits in force (an action larger than the byte limit goes alone)."""
        chunk: list[int] = []
        size = 0
        for index in indexes:
            length = len(cast(bytes, lines[index]))
            if chunk and (len(chunk) >= self.limit_actions or size + length > self.limit_bytes):
                yield chunk
                chunk, size = [], 0
            chunk.append(index)
            size += length
        if chunk:
            yield chunk

    async def _send(self, chunk: list[int], lines: Sequence[bytes | EncodeError]) -> list[bspump.ItemFailure]:
        """One bulk request for the events at ``chunk``; the failures of those the cluster did not write."""
        body = b"".join(cast(bytes, lines[i]) for i in chunk)
        self.requests += 1
        client = self.es.current_client
        try:
            response = await self.bulk(body)
        except ApiError as exc:
            self.request_errors += 1
            status = int(exc.status_code)
            if status not in (413, 429):
                return [bspump.ItemFailure(i, exc) for i in chunk]
            self._shrink(status, len(chunk), len(body))
            if status == 429:  # the cluster is overloaded: smaller requests, after the backoff
                return [bspump.ItemFailure(i, exc, ErrorKind.TRANSIENT) for i in chunk]
            if len(chunk) == 1:
                error = BulkItemError(413, "request_entity_too_large",
                                      f"one action of {len(body)} bytes is larger than the cluster accepts "
                                      "(http.max_content_length)", self.spec.op_type, self.spec.index.template)
                return [bspump.ItemFailure(chunk[0], error, ErrorKind.PERMANENT)]
            failures: list[bspump.ItemFailure] = []
            for part in self._chunks(chunk, lines):  # within the halved limits, at once
                failures.extend(await self._send(part, lines))
            return failures
        except Exception as exc:  # not known to be written: the connection classifies (link, transient...)
            self.request_errors += 1
            log.debug("%s: bulk request of %d actions failed: %s", self.qualified_id, len(chunk), exc)
            # The connection closed this client under the request (another writer reported a link failure
            # and it reconnects): whatever the client raised, the request got no answer. Sent again once the
            # connection is ready; not reported again, which would start one more reconnection.
            replaced = client is not None and client is not self.es.current_client
            kind = ErrorKind.TRANSIENT if replaced else None
            return [bspump.ItemFailure(i, exc, kind) for i in chunk]
        self._grow()
        failures = self.item_failures(chunk, response)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: bulk request of %d actions: %d not written (%s)", self.qualified_id, len(chunk),
                      len(failures), ", ".join(sorted({str(f.error)[:80] for f in failures}))[:300])
        return failures

    async def bulk(self, body: bytes) -> Mapping[str, Any]:
        """Send one bulk request (NDJSON ``body``); the parsed response. Raises the client's errors."""
        client = self.es.client
        if self.request_timeout:
            client = client.options(request_timeout=self.request_timeout)
        params: dict[str, Any] = {"filter_path": FILTER_PATH}
        if self.spec.index.fixed is not None:
            params["index"] = self.spec.index.fixed
        if self.ingest_pipeline:
            params["pipeline"] = self.ingest_pipeline
        if self.refresh != "false":
            params["refresh"] = self.refresh
        # The body is already NDJSON: the client sends bytes as they are.
        response = await client.bulk(operations=cast(Any, body), **params)
        return cast(Mapping[str, Any], response.body)

    def item_failures(self, chunk: list[int], response: Mapping[str, Any]) -> list[bspump.ItemFailure]:
        """Classify every item of a bulk response; ``chunk[i]`` is the batch index of item ``i``."""
        items = response.get("items") or []
        if len(items) != len(chunk):  # without a verdict per event, none is known to be written
            log.warning("%s: a bulk response holds %d results for %d actions (%.200r); sending them again",
                        self.qualified_id, len(items), len(chunk), response)
            error = BulkItemError(500, "unexpected_response",
                                  f"{len(items)} results for {len(chunk)} actions", self.spec.op_type)
            return [bspump.ItemFailure(i, error, ErrorKind.TRANSIENT) for i in chunk]
        if response.get("errors") is False:
            return []
        failures: list[bspump.ItemFailure] = []
        for index, item in zip(chunk, items, strict=True):
            ((op_type, result),) = item.items()
            if "error" not in result:  # written; also a delete that found nothing to delete (404)
                continue
            status = int(result.get("status", 0))
            if status == 409 and op_type == "create":  # already there: written before (a retry or a replay)
                continue
            failures.append(bspump.ItemFailure(index, BulkItemError.from_item(op_type, result)))
        return failures

    def _shrink(self, status: int, actions: int, size: int) -> None:
        self.shrinks += 1
        self.limit_actions = max(1, min(self.limit_actions, actions) // 2)
        self.limit_bytes = max(MIN_REQUEST_BYTES, min(self.limit_bytes, size) // 2)
        log.warning("%s: a bulk request of %d actions (%d bytes) was refused with %d; sending at most %d "
                    "actions and %d bytes per request for now", self.qualified_id, actions, size, status,
                    self.limit_actions, self.limit_bytes)

    def _grow(self) -> None:
        if self.limit_actions < self.max_actions:
            self.limit_actions = min(self.max_actions, self.limit_actions + max(1, self.max_actions // 10))
        if self.limit_bytes < self.max_bytes:
            self.limit_bytes = min(self.max_bytes, self.limit_bytes + max(1, self.max_bytes // 10))
