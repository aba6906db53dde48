"""Replication slot and publication management, and the slot's health, in plain SQL."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Final

import asyncpg

from bspump import BSPumpError

from .sql import qualified, quote_ident, split_table

log = logging.getLogger("bspump.postgresql")

PEEK: Final = (
    "SELECT lsn, data FROM pg_logical_slot_peek_binary_changes($1, $2, $3, 'proto_version', '1', "
    "'publication_names', $4)"
)
ADVANCE: Final = "SELECT end_lsn FROM pg_replication_slot_advance($1, $2)"
FLUSH_LSN: Final = "SELECT pg_current_wal_flush_lsn()"
HEALTH: Final = (
    "SELECT s.wal_status, s.safe_wal_size, s.confirmed_flush_lsn, "
    "pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::bigint AS retained, "
    "pg_size_bytes(current_setting('max_slot_wal_keep_size')) AS keep_size "
    "FROM pg_replication_slots s WHERE s.slot_name = $1"
)

#: ``wal_status`` of pg_replication_slots as the gauge reports it: higher is worse.
WAL_STATUS: Final = {"reserved": 0.0, "extended": 1.0, "unreserved": 2.0, "lost": 3.0}

#: SQLSTATE of "replication slot is active for PID ...": another call of ours still holds it for a moment.
OBJECT_IN_USE: Final = "55006"


class SlotError(BSPumpError):
    """The replication slot or publication is missing (and may not be created) or unusable."""


@dataclass(slots=True)
class SlotHealth:
    """One reading of ``pg_replication_slots`` for the slot."""

    wal_status: str
    retained: int  # bytes of WAL the slot holds back (current WAL position - restart_lsn)
    safe_wal_size: int | None  # bytes that may still be written before the slot is in danger; None: no limit
    keep_size: int  # max_slot_wal_keep_size in bytes; -1: unlimited
    confirmed_flush_lsn: int | None

    def warning(self, slot: str, fraction: float) -> str | None:
        """A message when the slot is lost, about to be invalidated, or holds more than ``fraction`` of
        ``max_slot_wal_keep_size``; None while healthy."""
        mb = 1024 * 1024
        if self.wal_status == "lost":
            return (f"replication slot {slot!r} lost WAL it needed (wal_status=lost): changes were missed; drop "
                    "and re-create the slot (with an initial snapshot) to continue")
        if self.wal_status == "unreserved":
            return (f"replication slot {slot!r} holds {self.retained // mb} MB of WAL, past max_slot_wal_keep_size "
                    "(wal_status=unreserved): it is invalidated at the next checkpoint unless the pipeline catches up")
        if self.keep_size > 0 and self.retained >= fraction * self.keep_size:
            return (f"replication slot {slot!r} holds {self.retained // mb} MB of WAL, "
                    f"{100 * self.retained // self.keep_size}% of max_slot_wal_keep_size "
                    f"({self.keep_size // mb} MB): the slot is invalidated when it passes the limit")
        return None

    def gauges(self) -> dict[str, float]:
        return {
            "slot_retained_bytes": float(self.retained),
            "slot_wal_status": WAL_STATUS.get(self.wal_status, 3.0),
            "slot_safe_wal_bytes": float(self.safe_wal_size) if self.safe_wal_size is not None else -1.0,
        }


async def read_health(connection: asyncpg.Connection, slot: str) -> SlotHealth | None:
    """The slot's health now; None if there is no such slot."""
    row = await connection.fetchrow(HEALTH, slot)
    if row is None:
        return None
    return SlotHealth(str(row["wal_status"] or "lost"), int(row["retained"] or 0),
                      None if row["safe_wal_size"] is None else int(row["safe_wal_size"]), int(row["keep_size"]),
                      row["confirmed_flush_lsn"])


async def ensure_publication(connection: asyncpg.Connection, publication: str, tables: list[str],
                             create: bool) -> None:
    """Create the publication (for ``tables``, or all tables) unless it exists; raise SlotError if it is
    missing and may not be created."""
    if await connection.fetchval("SELECT 1 FROM pg_publication WHERE pubname = $1", publication):
        return
    if not create:
        raise SlotError(f"publication {publication!r} does not exist: create it (CREATE PUBLICATION ... FOR TABLE "
                        "...), or set create_publication = true")
    listed = ", ".join(qualified(*split_table(t)) for t in tables)
    target = f"FOR TABLE {listed}" if tables else "FOR ALL TABLES"
    try:
        await connection.execute(f"CREATE PUBLICATION {quote_ident(publication)} {target}")
    except asyncpg.DuplicateObjectError:
        return  # created meanwhile by another instance
    log.info("created publication %r %s", publication, target)


async def ensure_slot(connection: asyncpg.Connection, slot: str, create: bool) -> tuple[int, bool]:
    """The slot's confirmed position, and whether it was created now; raise SlotError if it is missing and may
    not be created, or is not a pgoutput slot of this database."""
    row = await connection.fetchrow(
        "SELECT plugin, slot_type, database, confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1",
        slot)
    if row is None:
        if not create:
            raise SlotError(f"replication slot {slot!r} does not exist: create it with "
                            f"pg_create_logical_replication_slot('{slot}', 'pgoutput'), or set create_slot = true")
        try:
            created = await connection.fetchrow(
                "SELECT lsn FROM pg_create_logical_replication_slot($1, 'pgoutput')", slot)
        except asyncpg.DuplicateObjectError:
            return await ensure_slot(connection, slot, False)
        log.info("created replication slot %r at %s", slot, created["lsn"])
        return int(created["lsn"]), True
    database = await connection.fetchval("SELECT current_database()")
    if row["slot_type"] != "logical" or row["plugin"] != "pgoutput" or row["database"] != database:
        raise SlotError(f"replication slot {slot!r} is a {row['slot_type']} slot with plugin {row['plugin']!r} in "
                        f"database {row['database']!r}; a pgoutput slot of database {database!r} is needed")
    return int(row["confirmed_flush_lsn"]), False


async def advance(connection: asyncpg.Connection, slot: str, lsn: int, patience: float = 5.0) -> None:
    """Move the slot's confirmed position to ``lsn``. A peek of ours cancelled a moment ago may still hold the
    slot on the server: wait for it (up to ``patience`` seconds) rather than lose the acknowledged position."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    while True:
        try:
            await connection.fetchval(ADVANCE, slot, lsn)
            return
        except asyncpg.PostgresError as error:
            if getattr(error, "sqlstate", None) != OBJECT_IN_USE or loop.time() > deadline:
                raise
        await asyncio.sleep(0.05)


PUBLICATION_TABLES: Final = "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1, 2"
#: The primary key columns of the table with OID ``$1``.
PRIMARY_KEY: Final = (
    "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
    "WHERE i.indrelid = $1::oid AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)"
)
#: The OID of the table named ``$1`` (a qualified, quoted name).
TABLE_OID: Final = "SELECT $1::text::regclass::oid"
