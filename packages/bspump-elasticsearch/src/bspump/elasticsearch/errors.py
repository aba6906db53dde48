"""What the cluster's refusals mean: the item error of a bulk response, and the classification of every error."""

from __future__ import annotations

from typing import Any

import elastic_transport

from bspump.failures import ErrorKind, classify_error
from elasticsearch import ApiError

#: Answers that a later attempt may not get: the cluster was busy (429), timed out (408, 504) or is
#: missing a shard or a node for the moment (5xx).
_TRANSIENT_STATUSES = frozenset({408, 429})


#: Item errors of a cluster in motion (a node shutting down or starting, a shard moving or recovering), which
#: some releases report with a 4xx status: a later attempt finds the shard again.
TRANSIENT_ERROR_TYPES = frozenset({
    "node_closed_exception", "index_shard_closed_exception", "illegal_index_shard_state_exception",
    "shard_not_found_exception", "no_shard_available_action_exception", "unavailable_shards_exception",
    "primary_missing_action_exception", "retry_on_primary_exception", "already_closed_exception",
    "node_not_connected_exception", "node_disconnected_exception", "connect_transport_exception",
    "send_request_transport_exception", "receive_timeout_transport_exception", "es_rejected_execution_exception",
    "circuit_breaking_exception", "process_cluster_event_timeout_exception", "cluster_block_exception",
})


def is_transient_status(status: int) -> bool:
    """True for HTTP statuses that a retry may cure: 408, 429 and every 5xx."""
    return status in _TRANSIENT_STATUSES or status >= 500


class BulkItemError(Exception):
    """One action of a bulk request that the cluster did not carry out.

    ``status`` is the item's HTTP status, ``error_type`` and ``reason`` come from its ``error`` object
    (``document_parsing_exception``, ``version_conflict_engine_exception``, ``es_rejected_execution_exception``
    ...), ``index``, ``doc_id`` and ``op_type`` say which action it was. The message, which a dead-lettered
    event carries in its context (``error``), reads ``400 document_parsing_exception: <reason> (index 'x',
    _id 'y')``.
    """

    def __init__(self, status: int, error_type: str, reason: str, op_type: str = "", index: str = "",
                 doc_id: str | None = None) -> None:
        self.status = status
        self.error_type = error_type
        self.reason = reason
        self.op_type = op_type
        self.index = index
        self.doc_id = doc_id
        where = f"index {index!r}" + (f", _id {doc_id!r}" if doc_id is not None else "")
        super().__init__(f"{status} {error_type}: {reason} ({where})")

    @classmethod
    def from_item(cls, op_type: str, result: dict[str, Any]) -> BulkItemError:
        """The error of one item of a bulk response (``{"index": {"status": 400, "error": {...}}}``)."""
        error = result.get("error")
        if isinstance(error, dict):
            error_type = str(error.get("type", "error"))
            reason = str(error.get("reason", ""))
            cause = error.get("caused_by")
            if isinstance(cause, dict) and cause.get("reason"):
                reason = f"{reason}; caused by {cause.get('type', 'error')}: {cause['reason']}"
        else:
            error_type, reason = "error", str(error or "no reason given")
        doc_id = result.get("_id")
        return cls(int(result.get("status", 0)), error_type, reason, op_type, str(result.get("_index", "")),
                   None if doc_id is None else str(doc_id))


def classify_es_error(error: BaseException) -> ErrorKind:
    """The kind of an error of the Elasticsearch client or of a bulk item.

    Unreachable nodes (``ConnectionError``, TLS failures) and requests on a client closed meanwhile are
    ``LINK``; timeouts, the statuses a retry may cure (408, 429, 5xx) and item errors of a node or shard that
    is closing or recovering (:data:`TRANSIENT_ERROR_TYPES`, whatever their status) are ``TRANSIENT``; other
    refusals (400 mapping and parse errors, 401/403, 404 of a missing index when auto-creation is off, 409
    conflicts) are ``PERMANENT``. Anything else: the core's default classification.
    """
    if isinstance(error, BulkItemError):
        transient = is_transient_status(error.status) or error.error_type in TRANSIENT_ERROR_TYPES
        return ErrorKind.TRANSIENT if transient else ErrorKind.PERMANENT
    if isinstance(error, elastic_transport.ConnectionTimeout):
        return ErrorKind.TRANSIENT
    if isinstance(error, elastic_transport.ConnectionError):
        return ErrorKind.LINK
    if isinstance(error, ApiError):
        return ErrorKind.TRANSIENT if is_transient_status(int(error.status_code)) else ErrorKind.PERMANENT
    if isinstance(error, elastic_transport.SerializationError):
        return ErrorKind.PERMANENT
    if isinstance(error, RuntimeError) and "closed" in str(error).lower():
        # aiohttp's "Session is closed" / "Connector is closed", which the transport passes on unwrapped: a
        # request started on a client that the connection closed to reconnect. No answer came: a link failure.
        return ErrorKind.LINK
    return classify_error(error)
