"""What kind of failure an error is, and what a sink reports about the events it could not write.

Every error a source or sink meets from its client is classified once, by its connection
(:meth:`bspump.Connection.classify`), into one of three kinds, and the framework acts on the kind:

- ``PERMANENT``: something about the event (a document the server refuses, a value that does not encode).
  Trying again cannot help: the pipeline's error policy applies at once (stop, skip, dead-letter).
- ``TRANSIENT``: the event may be written if tried again (a timeout, a throttled request, a deadlock, a full
  disk, a partition without a leader). The sink retries it with backoff for up to its ``retry_timeout``;
  what still fails then meets the error policy.
- ``LINK``: the link to the external system is gone (connection refused or reset, no broker reachable).
  Nothing is wrong with the event: the connection reconnects, the pipelines that use it pause, and the event
  is retried for as long as that takes.
"""

from __future__ import annotations

import enum
import errno
import socket
from dataclasses import dataclass
from typing import Final


class ErrorKind(enum.Enum):
    """How the framework reacts to an error; see the module documentation."""

    PERMANENT = "permanent"
    TRANSIENT = "transient"
    LINK = "link"


@dataclass(frozen=True, slots=True)
class ItemFailure:
    """One event of a batch that a sink could not write.

    ``index`` is the event's position in the batch handed to the sink. ``kind`` says what to do with it; left
    ``None``, the sink asks its connection to classify ``error`` (what most sinks want).
    """

    index: int
    error: BaseException
    kind: ErrorKind | None = None


#: Errors of the local machine that trying again may cure: a full disk or quota, a busy resource.
_TRANSIENT_ERRNOS: Final = frozenset({
    errno.ENOSPC, errno.EDQUOT, errno.EAGAIN, errno.EINTR, errno.EBUSY, errno.ENOBUFS, errno.ENOMEM,
    errno.EMFILE, errno.ENFILE,
})
#: Errors of the network path: the link is down, whatever the event.
_LINK_ERRNOS: Final = frozenset({
    errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE, errno.ENOTCONN, errno.ETIMEDOUT,
    errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN, errno.EHOSTDOWN, errno.ESHUTDOWN,
})


def classify_error(error: BaseException) -> ErrorKind:
    """The default classification, for errors of the standard library.

    ``ConnectionError``, name resolution failures and network ``OSError``s are ``LINK``; ``TimeoutError`` and
    the ``OSError``s a retry may cure (``ENOSPC``, ``EDQUOT``, ``EAGAIN``, ``EBUSY``, ...) are ``TRANSIENT``;
    other ``OSError``s (``EROFS``, ``EACCES``, ``ENOENT``, ``EISDIR``, ...) and every other exception are
    ``PERMANENT``. Connections refine this for their client's exceptions.
    """
    if isinstance(error, ConnectionError | socket.gaierror):
        return ErrorKind.LINK
    if isinstance(error, TimeoutError):
        return ErrorKind.TRANSIENT
    if isinstance(error, OSError):
        if error.errno in _LINK_ERRNOS:
            return ErrorKind.LINK
        if error.errno in _TRANSIENT_ERRNOS:
            return ErrorKind.TRANSIENT
        return ErrorKind.PERMANENT
    return ErrorKind.PERMANENT
