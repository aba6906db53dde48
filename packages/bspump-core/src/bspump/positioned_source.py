"""PositionedSource: a source whose events have positions, committed once the pipeline acknowledged them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Hashable, Mapping
from typing import Any, ClassVar, Generic, TypeVar, cast

from .checkpoint import CheckpointStore
from .config import Seconds
from .delivery import Delivery, PositionTracker
from .failures import ErrorKind
from .source import Source

log = logging.getLogger("bspump.source")

P = TypeVar("P", bound=Hashable)


class PositionedSource(Source, Generic[P]):
    """A source that reads partitions with positions (Kafka offsets, MongoDB resume tokens, PostgreSQL LSNs,
    file offsets) and commits a position only once every event up to it was acknowledged.

    A subclass reads in :meth:`~bspump.Source.main` as any source does, and for each batch:

    1. ``delivery = self.track({partition: position_after_this_batch, ...})``,
    2. ``await self.emit(events, ..., delivery=delivery)``,
    3. ``await self.maybe_commit()`` (commits when ``commit_interval`` passed, and at once when a partition's
       first batch since it was assigned, or since the source started, was acknowledged: a process killed
       early in its first interval then does not read again everything it had already done).

    While the pipeline is throttled it awaits :meth:`wait_ready` (which keeps committing, and keeps the
    client's session alive through ``keepalive``). The base commits at stop too (:meth:`on_drained`), and
    :meth:`revoke` gives up partitions during a rebalance. Positions advance per partition through a
    :class:`~bspump.PositionTracker`: never past an event that is still in flight (no gap is skipped).

    Where positions go: :meth:`commit_positions`. A source whose system keeps positions (Kafka) overrides it;
    by default they go to the checkpoint store (:meth:`checkpoint_store`) under ``checkpoint_key``
    (``PipelineID.ComponentID``), and :meth:`load_positions` reads them back at start.
    Partitions must then be strings and positions JSON values.

    A commit that fails is classified by the source's connection: ``TRANSIENT`` and ``LINK`` failures keep
    the positions for the next commit (the newest per partition; the connection is told of link failures);
    a ``PERMANENT`` one drops them with a warning (the events after the last successful commit are read
    again after a restart: at least once).
    """

    _bspump_base: ClassVar[bool] = True
    ConfigDefaults: ClassVar[dict[str, Any]] = {"commit_interval": Seconds(1.0, min=0.0)}
    #: Seconds between looks for a first acknowledged batch while the pipeline is throttled before any commit.
    FIRST_COMMIT_POLL: ClassVar[float] = 0.05

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tracker: PositionTracker[P] = PositionTracker()
        self.commit_interval = self.Config.getseconds("commit_interval")
        #: Where the checkpoint store keeps this source's positions.
        self.checkpoint_key = self.qualified_id
        self._uncommitted: dict[P, Any] = {}
        self._stored: dict[P, Any] = {}  # what the checkpoint store holds for this source
        self._next_commit: float | None = None
        # Partitions whose commit was attempted since they were assigned (or since the start): the others
        # commit at once. Attempted, not succeeded: a commit that keeps failing waits for the interval.
        self._committed_partitions: set[P] = set()
        #: Successful commits so far.
        self.commits = 0

    # -- reading ---------------------------------------------------------------------------------------------
    def track(self, positions: Mapping[P, Any]) -> Delivery:
        """Start tracking a batch: ``positions`` are, per partition, what to commit once this batch and all
        before it are acknowledged (for Kafka: the batch's last offset + 1). Pass the result to ``emit``."""
        return self.tracker.track(positions)

    async def maybe_commit(self) -> None:
        """Commit if ``commit_interval`` passed since the last commit, or if a partition not committed since it
        was assigned has an acknowledged position (its first batch); call it after each emitted batch."""
        now = asyncio.get_running_loop().time()
        if self._next_commit is None:
            self._next_commit = now + self.commit_interval
        if now >= self._next_commit or not self.tracker.advanced() <= self._committed_partitions:
            self._next_commit = now + self.commit_interval
            await self.commit()

    async def wait_ready(
        self,
        keepalive: Callable[[], Awaitable[None]] | None = None,
        keepalive_interval: float | None = None,
    ) -> None:
        """Return when the pipeline takes events again; meanwhile commit what gets acknowledged, and call
        ``keepalive()`` every ``keepalive_interval`` seconds (a client that must poll to keep its session:
        backpressure must never cost the source its group membership or session)."""
        pipeline = self.pipeline
        if pipeline.ready:
            return
        tick = self.commit_interval if keepalive_interval is None else min(self.commit_interval, keepalive_interval)
        tick = max(tick, 0.01)
        while not pipeline.ready:
            if not self._committed_partitions:  # the first commit is due as soon as a batch is acknowledged
                tick = min(tick, self.FIRST_COMMIT_POLL)
            try:
                async with asyncio.timeout(tick):  # not wait_for: it can swallow a cancellation on 3.11
                    await pipeline.wait_ready()
            except TimeoutError:
                if keepalive is not None:
                    await keepalive()
                await self.maybe_commit()

    # -- committing ------------------------------------------------------------------------------------------
    def owned_partitions(self) -> Collection[P] | None:
        """The partitions this source may commit now (after a rebalance, others belong to another member);
        ``None``, the default, means all. Called at every commit."""
        return None

    async def commit(self) -> None:
        """Commit every acknowledged position of the partitions this source owns; called every
        ``commit_interval`` (:meth:`maybe_commit`), while throttled (:meth:`wait_ready`) and at stop."""
        pending = self._uncommitted
        pending.update(self.tracker.take_committable())
        if not pending:
            return
        owned = self.owned_partitions()
        positions = dict(pending) if owned is None else {p: v for p, v in pending.items() if p in owned}
        pending.clear()  # positions of partitions no longer owned belong to their new owner
        if not positions:
            return
        self._committed_partitions.update(positions)
        try:
            await self.commit_positions(positions)
        except asyncio.CancelledError:
            self._keep_newest(positions)
            raise
        except Exception as exc:
            kind = self.classify(exc)
            if kind is ErrorKind.PERMANENT:
                log.warning("%s: commit failed (%s: %s); those positions are dropped, and what was read after "
                            "the last successful commit is read again after a restart", self.qualified_id,
                            type(exc).__name__, exc)
                return
            log.warning("%s: commit failed (%s: %s); retrying with the next commit", self.qualified_id,
                        type(exc).__name__, exc)
            self._keep_newest(positions)
            if kind is ErrorKind.LINK:
                for connection in self.connections:
                    connection.report_failure(exc)
            return
        self.commits += 1
        log.debug("%s: committed %s", self.qualified_id, positions)

    def _keep_newest(self, positions: Mapping[P, Any]) -> None:
        """Put back positions whose commit failed, unless a newer one for the partition arrived meanwhile."""
        for partition, position in positions.items():
            self._uncommitted.setdefault(partition, position)

    async def commit_positions(self, positions: Mapping[P, Any]) -> None:
        """Store ``positions`` (partition -> position) durably; raise if that failed.

        The default saves them, with the positions of the other partitions, to :meth:`checkpoint_store`.
        A source whose external system keeps positions overrides this (Kafka: commit the group's offsets).
        """
        stored = {**self._stored, **positions}
        await self.checkpoint_store().save(self.checkpoint_key, cast(Mapping[str, Any], stored))
        self._stored = stored

    async def load_positions(self) -> dict[P, Any]:
        """The positions committed by a previous run (from :meth:`checkpoint_store` by default); call it at
        the start of ``main`` to resume where the acknowledged output ended."""
        stored = cast(dict[P, Any], await self.checkpoint_store().load(self.checkpoint_key))
        self._stored = dict(stored)
        return stored

    def checkpoint_store(self) -> CheckpointStore:
        """Where :meth:`commit_positions` and :meth:`load_positions` keep positions: the application's store
        (``[general] state_dir``) unless a subclass returns its own (a table of its connection's database)."""
        return self.app.checkpoints

    async def revoke(self, partitions: Collection[P], timeout: float) -> dict[P, Any]:
        """Give up ``partitions`` (a rebalance moves them elsewhere): wait up to ``timeout`` seconds for their
        events in flight, stop tracking them, and return their acknowledged positions, which the caller
        commits before the partitions go."""
        drained = await self.tracker.wait_drained(partitions, timeout)
        if not drained:
            log.warning("%s: %d batches of revoked partitions still unacknowledged after %ss; the next owner "
                        "reads them again", self.qualified_id, self.tracker.pending(partitions), timeout)
        self._uncommitted.update(self.tracker.take_committable())
        positions = {p: self._uncommitted.pop(p) for p in partitions if p in self._uncommitted}
        self.tracker.forget(partitions)
        self._committed_partitions.difference_update(partitions)  # if assigned again: first commit at once
        return positions

    async def on_drained(self) -> None:
        await self.commit()
