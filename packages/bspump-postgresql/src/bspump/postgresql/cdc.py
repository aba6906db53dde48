"""PostgreSQLCDCSource: change data capture through logical decoding, with plain SQL functions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, ClassVar, Final

import asyncpg

from bspump import PositionedSource
from bspump import context as keys
from bspump.config import Float, Int, Seconds

from . import change
from .checkpoint import DEFAULT_TABLE, PostgreSQLCheckpointStore
from .connection import PostgreSQLConnection
from .pgoutput import Begin, Change, Commit, PgOutputDecoder, Relation
from .slot import (
    FLUSH_LSN,
    PEEK,
    PRIMARY_KEY,
    PUBLICATION_TABLES,
    TABLE_OID,
    SlotHealth,
    advance,
    ensure_publication,
    ensure_slot,
    read_health,
)
from .sql import parse_names, qualified

log = logging.getLogger("bspump.postgresql")

#: The one partition of a CDC source: its slot's position.
SLOT: Final = "slot"
#: Completed "decoded up to here" markers allowed to wait behind unacknowledged transactions.
MAX_PENDING_MARKERS: Final = 64


class PostgreSQLCDCSource(PositionedSource[str]):
    """Changes of the published tables, in commit order, read from a logical replication slot.

    asyncpg speaks no replication protocol, so the source reads with SQL: ``pg_logical_slot_peek_binary_changes``
    in windows of at most ``window`` messages (whole transactions), decoded from ``pgoutput``; then
    ``pg_replication_slot_advance`` moves the slot to the end of the last transaction whose every change was
    acknowledged by the pipeline's sink, never further. A transaction's changes are never split across two
    acknowledgement positions, so after a crash it is read again whole (at least once). While tables are quiet,
    the slot still advances to the WAL position decoding reached, once nothing before it is unacknowledged, so
    an idle pipeline holds back no WAL that other databases of the server write.

    Events are changes as :mod:`bspump.postgresql.change` describes; the context holds ``lsn``, ``commit_lsn``,
    ``commit_time`` and ``xid``.

    Configuration (``[pipeline:ID:PostgreSQLCDCSource]``):

    - ``slot``: the logical replication slot (pgoutput); created when missing if ``create_slot`` is true.
    - ``publication``: the publication naming the tables to capture; created when missing if
      ``create_publication`` is true, for ``tables`` (``schema.table`` names separated by commas; empty: all
      tables, which needs a superuser). An existing publication is used as it is.
    - ``window``: messages decoded per peek at most (decoding stops at the first transaction end past it).
    - ``batch_size``: changes per batch handed to the pipeline.
    - ``poll_interval``: the pause between peeks while nothing changes.
    - ``snapshot``: read every published table whole before streaming (op ``snapshot``), when the slot is
      created and until such a snapshot completed (recorded in ``checkpoint_table``). Rows changed meanwhile
      arrive twice (snapshot and change): duplicates, never gaps.
    - ``checkpoint_table``: the table of the connection's database that records completed snapshots.
    - ``health_interval``: how often the slot's health is read (gauges ``slot_retained_bytes``,
      ``slot_wal_status`` 0 reserved, 1 extended, 2 unreserved, 3 lost, and ``slot_safe_wal_bytes``).
    - ``wal_warning``: warn when the slot holds more than this fraction of ``max_slot_wal_keep_size`` (or is
      ``unreserved``: about to be invalidated; or ``lost``).
    """

    ConfigDefaults: ClassVar[dict[str, Any]] = {
        "slot": "",
        "publication": "",
        "tables": "",
        "create_slot": True,
        "create_publication": True,
        "window": Int(10000, min=1, max=10_000_000),
        "batch_size": Int(500, min=1, max=100_000),
        "poll_interval": Seconds(0.2, min=0.001),
        "snapshot": False,
        "checkpoint_table": DEFAULT_TABLE,
        "health_interval": Seconds(10.0, min=0.1),
        "wal_warning": Float(0.8, min=0.0, max=1.0),
    }
    ConfigRequired: ClassVar[tuple[str, ...]] = ("slot", "publication")
    ConnectionType = PostgreSQLConnection

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        config = self.Config
        self.slot = str(config.get("slot"))
        self.publication = str(config.get("publication"))
        self.tables = parse_names(str(config.get("tables") or ""))
        self.window = config.getint("window")
        self.batch_size = config.getint("batch_size")
        self.poll_interval = config.getseconds("poll_interval")
        self.health_interval = config.getseconds("health_interval")
        self.wal_warning = config.getfloat("wal_warning")
        self.decoder = PgOutputDecoder()
        #: The slot's confirmed position as this source last set (or found) it.
        self.confirmed_lsn = 0
        #: The last slot health reading (None before the first).
        self.health: SlotHealth | None = None
        #: Peeks run, changes emitted, and slot advances done.
        self.peeks = 0
        self.changes = 0
        self.advances = 0
        self._emitted_commit = 0  # commit LSN of the last transaction handed to the pipeline whole
        self._tracked = 0  # the highest position tracked so far
        self._next_health = 0.0
        self._store: PostgreSQLCheckpointStore | None = None
        self._primary_keys: dict[int, list[str] | None] = {}

    def preflight(self) -> None:
        """The source holds a pooled connection while it reads a window and advances the slot on another."""
        _needs_two_connections(self)

    @property
    def pg(self) -> PostgreSQLConnection:
        connection = self.connection
        assert isinstance(connection, PostgreSQLConnection)
        return connection

    def checkpoint_store(self) -> PostgreSQLCheckpointStore:
        """Snapshot completion is recorded in ``checkpoint_table`` of the connection's database."""
        if self._store is None:
            self._store = PostgreSQLCheckpointStore(self.pg, str(self.Config.get("checkpoint_table")))
        return self._store

    # -- the framework's calls -------------------------------------------------------------------------------------
    async def main(self) -> None:
        """Prepare the publication and slot, take the snapshot if due, then peek, emit and advance for ever."""
        created = await self.start_client(self._prepare, f"preparing replication slot {self.slot!r}")
        if self.Config.getboolean("snapshot"):
            await self.start_client(lambda: self._snapshot(created), "the initial snapshot")
        while True:
            await self.wait_ready(keepalive=self._check_health, keepalive_interval=self.health_interval)
            if not await self.start_client(self._read_and_advance, f"reading slot {self.slot!r}"):
                await asyncio.sleep(self.poll_interval)

    async def _read_and_advance(self) -> bool:
        """One window: peek and emit it, advance the slot past what is acknowledged, check the slot's health.
        True if the window held changes."""
        fresh = await self._read_window()
        # Wait a moment for what was just emitted, so the next peek does not decode it again.
        await self.tracker.wait_drained(timeout=self.commit_interval)
        await self.commit()
        await self._check_health()
        return fresh

    async def commit_positions(self, positions: Mapping[str, Any]) -> None:
        """Advance the slot to the acknowledged position (never backwards); called by the base's commits."""
        lsn = int(positions[SLOT])
        if lsn <= self.confirmed_lsn:
            return
        async with self.pg.session() as session:
            await advance(session, self.slot, lsn)
        self.confirmed_lsn = lsn
        self.advances += 1

    def gauges(self) -> Mapping[str, float]:
        """The slot's health as last read: retained WAL bytes, ``wal_status`` and safe WAL size."""
        return self.health.gauges() if self.health is not None else {}

    # -- reading ---------------------------------------------------------------------------------------------------
    async def _prepare(self) -> bool:
        async with self.pg.session() as session:
            await ensure_publication(session, self.publication, self.tables,
                                     self.Config.getboolean("create_publication"))
            confirmed, created = await ensure_slot(session, self.slot, self.Config.getboolean("create_slot"))
        self.confirmed_lsn = self._tracked = self._emitted_commit = confirmed
        return created

    async def _read_window(self) -> bool:
        """One peek: decode up to ``window`` messages and emit the transactions not emitted before. Returns
        whether anything new was emitted."""
        events: list[Any] = []
        contexts: list[dict[str, Any]] = []
        fresh = False
        source = f"postgresql:{self.slot}"
        complete_end = self._tracked  # end of the last whole transaction in ``events`` (or before them)
        complete_commit = self._emitted_commit
        async with self.pg.session() as session, session.transaction():
            upto = int(await session.fetchval(FLUSH_LSN))
            self.decoder = decoder = PgOutputDecoder()  # each peek is a new decoding session: relations resent
            decode = decoder.decode
            cursor = await session.cursor(PEEK, self.slot, upto, self.window, self.publication)
            self.peeks += 1
            seen = 0
            skipping = False
            context: dict[str, Any] = {}
            limit = 2 * self.batch_size
            while True:
                rows = await cursor.fetch(max(self.batch_size, 100))
                if not rows:
                    break
                seen += len(rows)
                for lsn, data in rows:
                    message = decode(data)
                    if isinstance(message, Change):
                        if not skipping:
                            events.append(_event(message))
                            contexts.append({**context, change.LSN: lsn})
                    elif isinstance(message, Begin):
                        skipping = message.final_lsn <= self._emitted_commit
                        context = {keys.SOURCE: source, change.COMMIT_LSN: message.final_lsn,
                                   change.COMMIT_TIME: message.commit_time, change.XID: message.xid}
                    elif isinstance(message, Relation) and message.replica_identity != "d":
                        message.primary_key = await self._primary_key(session, message.oid)
                    elif isinstance(message, Commit):
                        if not skipping:
                            complete_end = max(complete_end, message.end_lsn)
                            complete_commit = message.commit_lsn
                        skipping = False
                    # Batches end with a transaction where they can, so that each batch's position covers all
                    # of it; a transaction far larger than a batch is handed over in parts (memory stays bounded).
                    if len(events) >= self.batch_size and (isinstance(message, Commit) or len(events) >= limit):
                        fresh = True
                        await self._emit(events, contexts, complete_end, complete_commit)
                        events, contexts = [], []
            if events:
                fresh = True
                await self._emit(events, contexts, complete_end, complete_commit)
            elif complete_commit > self._emitted_commit:  # whole transactions without a change of ours
                self._emitted_commit = complete_commit
        if seen < self.window:
            # Decoding reached ``upto``: every transaction that committed before it was emitted now or earlier.
            # Once those are acknowledged the slot may move to ``upto``, which lets go of WAL written meanwhile
            # for other tables and databases.
            self._mark(max(upto, complete_end))
        elif complete_end > self._tracked:
            self._mark(complete_end)
        return fresh

    async def _primary_key(self, session: asyncpg.Connection, oid: int) -> list[str] | None:
        """The primary key columns of a table whose replica identity is not its primary key (FULL, an index,
        NOTHING), looked up once per table; None when it has none (the identity then identifies rows)."""
        if oid not in self._primary_keys:
            names = [r["attname"] for r in await session.fetch(PRIMARY_KEY, oid)]
            self._primary_keys[oid] = names or None
        return self._primary_keys[oid]

    async def _emit(self, events: list[Any], contexts: list[dict[str, Any]], complete_end: int,
                    complete_commit: int) -> None:
        position = max(complete_end, self._tracked)
        delivery = self.track({SLOT: position})
        self._tracked = position
        await self.emit(events, contexts=contexts, delivery=delivery)
        self._emitted_commit = max(self._emitted_commit, complete_commit)
        self.changes += len(events)
        # The peek's result is already complete on the server, which no longer holds the slot: advancing it now,
        # while the rest of the window is read, keeps what a crash would read again small.
        await self.maybe_commit()

    def _mark(self, position: int) -> None:
        """Track a position that carries no event: committed once everything tracked before it is."""
        if position <= self._tracked or self.tracker.pending() >= MAX_PENDING_MARKERS:
            return
        delivery = self.track({SLOT: position})
        self._tracked = position
        delivery.seal()

    # -- initial snapshot ------------------------------------------------------------------------------------------
    def _snapshot_key(self) -> str:
        return f"{self.checkpoint_key}:snapshot:{self.slot}"

    async def _snapshot(self, slot_created: bool) -> None:
        store = self.checkpoint_store()
        key = self._snapshot_key()
        if not slot_created and (await store.load(key)).get("done"):
            return
        async with self.pg.session() as session:
            tables = [(r["schemaname"], r["tablename"])
                      for r in await session.fetch(PUBLICATION_TABLES, self.publication)]
        total = 0
        for schema, table in tables:
            total += await self._snapshot_table(schema, table)
        await self.tracker.wait_drained()
        await self.commit()
        await store.save(key, {"done": True, "rows": total})
        log.info("%s: initial snapshot of %d tables done (%d rows)", self.qualified_id, len(tables), total)

    async def _snapshot_table(self, schema: str, table: str) -> int:
        name = qualified(schema, table)
        count = 0
        async with self.pg.session() as session, session.transaction(isolation="repeatable_read", readonly=True):
            oid = await session.fetchval(TABLE_OID, name)
            key_columns = [r["attname"] for r in await session.fetch(PRIMARY_KEY, oid)]
            cursor = await session.cursor(f"SELECT * FROM {name}")
            context = {keys.SOURCE: f"postgresql:{self.slot}", keys.PATH: f"{schema}.{table}"}
            while True:
                rows = await cursor.fetch(self.batch_size)
                if not rows:
                    return count
                events = []
                for record in rows:
                    row = dict(record)
                    events.append({"op": change.SNAPSHOT, "schema": schema, "table": table,
                                   "key": {k: row.get(k) for k in key_columns} or None, "row": row, "old": None})
                delivery = self.track({SLOT: self._tracked})
                await self.emit(events, context, delivery=delivery)
                count += len(events)

    # -- slot health -----------------------------------------------------------------------------------------------
    async def _check_health(self) -> None:
        now = asyncio.get_running_loop().time()
        if now < self._next_health:
            return
        self._next_health = now + self.health_interval
        try:
            async with self.pg.session() as session:
                health = await read_health(session, self.slot)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, ConnectionError) as error:
            log.debug("%s: reading the slot's health failed: %s", self.qualified_id, error)
            return
        if health is None:
            log.error("%s: replication slot %r disappeared", self.qualified_id, self.slot)
            return
        self.health = health
        warning = health.warning(self.slot, self.wal_warning)
        if warning:
            (log.error if health.wal_status == "lost" else log.warning)("%s: %s", self.qualified_id, warning)


def _event(message: Change) -> dict[str, Any]:
    relation = message.relation
    if relation is None:  # truncate
        return {"op": message.op, "schema": None, "table": None, "key": None, "row": None, "old": None,
                "tables": [f"{schema}.{table}" for schema, table in message.tables or ()]}
    return {"op": message.op, "schema": relation.schema, "table": relation.name, "key": message.key(),
            "row": message.row, "old": message.old}


def _needs_two_connections(source: PostgreSQLCDCSource) -> None:
    pool_max = source.pg.Config.getint("pool_max")
    if pool_max < 2:
        raise source.pg.Config.error("pool_max", f"{source.qualified_id} reads on one connection of the pool while it "
                                                 f"commits on another: pool_max must be at least 2, not {pool_max}")
