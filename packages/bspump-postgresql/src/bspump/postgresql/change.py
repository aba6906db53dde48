"""The shape of a change event, as :class:`~bspump.postgresql.PostgreSQLCDCSource` emits it and
:class:`~bspump.postgresql.PostgreSQLSink` (``events = changes``) applies it.

A change is a dict::

    {"op": "update", "schema": "public", "table": "orders",
     "key": {"id": 7},                 # the primary key (replica identity) columns of the row
     "row": {"id": 7, "state": "paid"}, # the new row (None for a delete)
     "old": {"id": 7, "state": "new"}}  # the old key or row where the replica identity provides it, else None

``op`` is ``insert``, ``update``, ``delete``, ``truncate`` (``key``/``row``/``old`` are then None and
``tables`` lists the truncated tables) or ``snapshot`` (a row read by the initial snapshot). Columns whose
value PostgreSQL did not send (an unchanged TOASTed value of an update) are absent from ``row``.

The context of each change holds ``lsn`` (of the change), ``commit_lsn`` and ``end_lsn`` (of its transaction's
commit record; the slot advances to ``end_lsn``), ``commit_time`` (an aware ``datetime``) and ``xid``. LSNs are
integers, as asyncpg gives ``pg_lsn`` values; :func:`format_lsn` writes them as PostgreSQL does.
"""

from __future__ import annotations

from typing import Final

INSERT: Final = "insert"
UPDATE: Final = "update"
DELETE: Final = "delete"
TRUNCATE: Final = "truncate"
SNAPSHOT: Final = "snapshot"

#: Operations that leave a row in the table (an upsert applies them).
ROW_OPERATIONS: Final = frozenset({INSERT, UPDATE, SNAPSHOT})

#: Context keys of a change.
LSN: Final = "lsn"
COMMIT_LSN: Final = "commit_lsn"
END_LSN: Final = "end_lsn"
COMMIT_TIME: Final = "commit_time"
XID: Final = "xid"


def format_lsn(lsn: int) -> str:
    """An LSN as PostgreSQL writes it (``16/B374D848``)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    """An LSN written as PostgreSQL does, as an integer."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)
