"""How PostgreSQL's and asyncpg's errors map to the framework's error kinds."""

from __future__ import annotations

from typing import Final

import asyncpg

from bspump import ErrorKind

#: SQLSTATEs worth retrying: serialization failure, deadlock, lock not available, statement cancelled by a
#: timeout, an object in use, and the insufficient-resources class (53: disk full, out of memory, too many
#: connections).
_TRANSIENT_STATES: Final = frozenset({"40001", "40P01", "55P03", "57014", "55006"})
_TRANSIENT_CLASSES: Final = frozenset({"53"})
#: The server is going away or not there yet (admin/crash shutdown, cannot connect now); class 08 is
#: "connection exception".
_LINK_STATES: Final = frozenset({"57P01", "57P02", "57P03"})
_LINK_CLASSES: Final = frozenset({"08"})


def sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE of a server error, if ``error`` is one."""
    state = getattr(error, "sqlstate", None)
    return state if isinstance(state, str) else None


def classify_postgres_error(error: BaseException) -> ErrorKind | None:
    """The kind of an asyncpg or server error; ``None`` for errors asyncpg did not raise (the standard
    library's classification applies to them)."""
    if isinstance(error, asyncpg.exceptions.ConnectionDoesNotExistError):
        return ErrorKind.LINK
    if isinstance(error, asyncpg.PostgresError):
        state = sqlstate(error) or ""
        if state in _LINK_STATES or state[:2] in _LINK_CLASSES:
            return ErrorKind.LINK
        if state in _TRANSIENT_STATES or state[:2] in _TRANSIENT_CLASSES:
            return ErrorKind.TRANSIENT
        return ErrorKind.PERMANENT
    if isinstance(error, asyncpg.exceptions.DataError):  # a value asyncpg cannot encode for its column
        return ErrorKind.PERMANENT
    if isinstance(error, asyncpg.InterfaceError):
        message = str(error)
        if "closed" in message or "closing" in message or "not ready" in message:
            return ErrorKind.LINK
        return ErrorKind.PERMANENT
    return None
