"""What kind of failure a PyMongo error is (see :mod:`bspump.failures`), and the errors of this package.

The tables follow the server's error codes rather than PyMongo's exception classes alone, because a
bulk write reports its item errors as plain ``{"code": ..., "errmsg": ...}`` documents, and a change
stream's fatal errors arrive as an ``OperationFailure`` whose code tells them apart.
"""

from __future__ import annotations

from typing import Any, Final

from pymongo.errors import (
    BulkWriteError,
    ConfigurationError,
    ConnectionFailure,
    ExecutionTimeout,
    InvalidOperation,
    OperationFailure,
    PyMongoError,
    WriteConcernError,
    WriteError,
)

from bspump import BSPumpError, ErrorKind
from bspump.failures import classify_error

#: The link is gone: not the primary any more, shutting down, unreachable (reconnect; the pipeline pauses).
LINK_CODES: Final = frozenset({
    6,  # HostUnreachable
    7,  # HostNotFound
    89,  # NetworkTimeout
    91,  # ShutdownInProgress
    189,  # PrimarySteppedDown
    9001,  # SocketException
    10058,  # LegacyNotPrimary
    10107,  # NotWritablePrimary
    11600,  # InterruptedAtShutdown
    11602,  # InterruptedDueToReplStateChange
    13435,  # NotPrimaryNoSecondaryOk
    13436,  # NotPrimaryOrSecondary
})
#: The same request may succeed later: timeouts, conflicts, a write concern not yet satisfied.
TRANSIENT_CODES: Final = frozenset({
    24,  # LockTimeout
    46,  # LockBusy
    50,  # MaxTimeMSExpired
    64,  # WriteConcernFailed (wtimeout)
    100,  # UnsatisfiableWriteConcern (a member is down)
    112,  # WriteConflict
    134,  # ReadConcernMajorityNotAvailableYet
    262,  # ExceededTimeLimit
    43,  # CursorNotFound (a cursor idle past the server's timeout while the pipeline was throttled)
    175,  # QueryPlanKilled
    237,  # CursorKilled
    11601,  # Interrupted
    14031,  # OutOfDiskSpace
    16500,  # shard throttling (Cosmos/DocumentDB style "request rate is large")
})
#: Codes and labels the server gives to errors that a retry may cure.
TRANSIENT_LABELS: Final = ("RetryableWriteError", "TransientTransactionError")

#: A change stream's resume point is no longer in the oplog.
HISTORY_LOST: Final = 286
#: A change stream cannot continue (e.g. resumeAfter an invalidate, a pre-image that is required but gone).
CHANGE_STREAM_FATAL: Final = 280
#: ``resumeAfter`` an invalidate event is refused; ``startAfter`` must be used.
INVALIDATE_RESUME: Final = 260
DUPLICATE_KEY: Final = frozenset({11000, 11001, 12582})


def classify_code(code: int | None, labels: tuple[str, ...] = ()) -> ErrorKind | None:
    """The kind of a server error code (and its labels), or ``None`` if the code says nothing."""
    if code in LINK_CODES:
        return ErrorKind.LINK
    if code in TRANSIENT_CODES or any(label in TRANSIENT_LABELS for label in labels):
        return ErrorKind.TRANSIENT
    return None


def classify_mongo_error(error: BaseException) -> ErrorKind:
    """Network errors and ``NotWritablePrimary`` are ``LINK``; write concern errors, timeouts, retryable
    writes and the use of a client closed by a reconnect ``TRANSIENT``; validation, duplicate keys, bad
    documents and every other server refusal ``PERMANENT``. Errors that are not PyMongo's go to the standard
    table (:func:`bspump.classify_error`)."""
    if isinstance(error, ConnectionFailure):  # AutoReconnect, NotPrimaryError, NetworkTimeout, selection timeout
        return ErrorKind.LINK
    if isinstance(error, WriteConcernError | ExecutionTimeout):
        return ErrorKind.TRANSIENT
    if isinstance(error, BulkWriteError):
        # A bulk write's item errors are sorted out one by one by the sink; as a whole, the batch is the
        # kind of its most hopeful item (a retry of the batch then sorts them again).
        details = error.details or {}
        kinds = {classify_code(e.get("code")) for e in details.get("writeErrors", ())}
        if details.get("writeConcernErrors"):
            kinds.add(ErrorKind.TRANSIENT)
        for kind in (ErrorKind.LINK, ErrorKind.TRANSIENT):
            if kind in kinds:
                return kind
        return ErrorKind.PERMANENT
    if isinstance(error, OperationFailure):
        labels = tuple(label for label in TRANSIENT_LABELS if error.has_error_label(label))
        return classify_code(error.code, labels) or ErrorKind.PERMANENT
    if isinstance(error, InvalidOperation) and "after close" in str(error):
        # A cursor or change stream of a client the connection closed when it reconnected: the next attempt
        # goes through the connection's new client. (Seen as a crashed change stream source after a restart.)
        return ErrorKind.TRANSIENT
    if isinstance(error, ConfigurationError | InvalidOperation | PyMongoError):
        return ErrorKind.PERMANENT
    return classify_error(error)


class ChangeStreamHistoryLostError(BSPumpError):
    """The stored resume token is older than the server's oplog: the changes between the last acknowledged
    event and the oldest change still kept are gone. Raised under ``on_history_lost = fail``."""


class ItemWriteError(WriteError):
    """A bulk write's error for one item, as the server reported it (``code``, ``details``).

    Its text is the server's message and code only: PyMongo's own text appends the whole write, document
    included, which may hold what must not reach a log or a dead-letter sink."""

    def __init__(self, item: dict[str, Any]) -> None:
        self.message = str(item.get("errmsg") or "write error")
        # The server echoes the write ("op"): dropped, like PyMongo's text of it in args.
        super().__init__(self.message, item.get("code"), {k: v for k, v in item.items() if k != "op"})
        self.args = (str(self),)

    def __str__(self) -> str:
        return f"{self.message} (code {self.code})"
