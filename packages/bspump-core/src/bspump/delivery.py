"""Acknowledgement tracking for at-least-once delivery.

A source hands every batch to its pipeline together with a :class:`Delivery`. The pipeline counts the
events that batch turns into; each sink acknowledges the events it durably wrote (or the pipeline
acknowledges the ones deliberately dropped). When nothing is pending any more the delivery completes,
and a :class:`PositionTracker` then advances the committable position of each partition, never past a
batch that is still pending.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any, Generic, Protocol, TypeVar

P = TypeVar("P", bound=Hashable)


class AckListener(Protocol):
    """What a delivery reports to: the pipeline that counts in-flight events."""

    def settled(self, count: int) -> None:
        """``count`` events of a delivery were acknowledged or given up: they are no longer in flight."""

    def delivery_failed(self, delivery: Delivery, error: BaseException) -> None:
        """Events of ``delivery`` could be neither written nor dead-lettered (the ``stop`` policy)."""


class Delivery:
    """Acknowledgement token of one source batch.

    Call order: the pipeline sets :attr:`listener` and calls :meth:`add` for events that reach a sink and
    :meth:`seal` once the batch left the processors; sinks acknowledge as writes are confirmed (through
    ``Batch.ack``), and the pipeline calls :meth:`fail` when an event can neither be written nor
    dead-lettered. ``on_complete`` runs once, after the last ack of a sealed delivery; it never runs for a
    failed one, so its positions are never committed.
    """

    __slots__ = ("_on_complete", "completed", "failed", "listener", "pending", "positions", "sealed")

    def __init__(
        self,
        positions: Mapping[Any, Any] | None = None,
        on_complete: Callable[[Delivery], None] | None = None,
    ) -> None:
        self.positions: Mapping[Any, Any] = positions or {}
        self.pending = 0
        self.sealed = False
        self.failed: BaseException | None = None
        self.completed = False
        self.listener: AckListener | None = None
        self._on_complete = on_complete

    def add(self, count: int) -> None:
        """Count ``count`` more events that a sink must acknowledge."""
        self.pending += count

    def seal(self) -> None:
        """Declare that no more events will be added; completes at once if none are pending."""
        self.sealed = True
        if self.pending == 0:
            self._complete()

    def ack(self, count: int = 1) -> None:
        """Acknowledge ``count`` events as durably written (or deliberately dropped)."""
        self.pending -= count
        listener = self.listener
        if listener is not None:
            listener.settled(count)
        if self.pending <= 0 and self.sealed:
            self._complete()

    def fail(self, error: BaseException, count: int = 1) -> None:
        """Give up on ``count`` events: the delivery never completes, the pipeline applies its policy."""
        if self.failed is None:
            self.failed = error
        self.pending -= count
        listener = self.listener
        if listener is not None:
            listener.settled(count)
            listener.delivery_failed(self, error)

    def _complete(self) -> None:
        if self.completed or self.failed is not None:
            return
        self.completed = True
        if self._on_complete is not None:
            self._on_complete(self)

    def __repr__(self) -> str:
        state = "failed" if self.failed else "completed" if self.completed else f"pending={self.pending}"
        return f"<Delivery {dict(self.positions)!r} {state}>"


class PositionTracker(Generic[P]):
    """Highest contiguous acknowledged position per partition, for sources that commit positions.

    ``track({partition: position})`` is called in the order batches are read; ``position`` is what the
    source would commit once that batch and everything before it is acknowledged (for Kafka: the last
    offset of the batch in that partition plus one). :meth:`take_committable` returns what advanced since
    the previous call.
    """

    def __init__(self) -> None:
        self._queues: dict[P, deque[tuple[Any, Delivery]]] = {}
        self._committable: dict[P, Any] = {}
        self._changed: set[P] = set()
        # wait_drained() callers: the partitions each waits for (None: all) and the future to resolve.
        self._drain_waiters: list[tuple[list[P] | None, asyncio.Future[None]]] = []

    def track(self, positions: Mapping[P, Any]) -> Delivery:
        """Start tracking a batch covering ``positions``; returns the delivery to hand to the pipeline."""
        delivery = Delivery(dict(positions), self._completed)
        for partition, position in positions.items():
            self._queues.setdefault(partition, deque()).append((position, delivery))
        return delivery

    def _completed(self, delivery: Delivery) -> None:
        for partition in delivery.positions:
            queue = self._queues.get(partition)
            while queue and queue[0][1].completed:
                position, _ = queue.popleft()
                self._committable[partition] = position
                self._changed.add(partition)
        if self._drain_waiters:
            self._wake_drained()

    def _wake_drained(self) -> None:
        waiting = []
        for wanted, future in self._drain_waiters:
            if future.done():
                continue
            if self.pending(wanted) == 0:
                future.set_result(None)
            else:
                waiting.append((wanted, future))
        self._drain_waiters = waiting

    def take_committable(self, partitions: Iterable[P] | None = None) -> dict[P, Any]:
        """Positions that advanced since the last call (optionally only for ``partitions``)."""
        wanted = self._changed if partitions is None else self._changed.intersection(partitions)
        result = {p: self._committable[p] for p in wanted}
        self._changed.difference_update(result)
        return result

    def advanced(self) -> AbstractSet[P]:
        """The partitions whose position advanced since the last :meth:`take_committable` (a live view)."""
        return self._changed

    def committed_view(self) -> dict[P, Any]:
        """Every partition's highest contiguous acknowledged position so far."""
        return dict(self._committable)

    def pending(self, partitions: Iterable[P] | None = None) -> int:
        """Number of batches still awaiting acknowledgement (in ``partitions`` if given)."""
        if partitions is None:
            return sum(len(q) for q in self._queues.values())
        return sum(len(self._queues.get(p, ())) for p in partitions)

    async def wait_drained(self, partitions: Iterable[P] | None = None, timeout: float | None = None) -> bool:
        """Wait until the given partitions (default all) have nothing pending; False on timeout."""
        wanted = None if partitions is None else list(partitions)
        if self.pending(wanted) == 0:
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._drain_waiters.append((wanted, future))  # resolved by the acknowledgement that drains them
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            return False
        finally:
            future.cancel()  # a no-op once resolved; dropped from the list at the next wake-up
        return True

    def forget(self, partitions: Iterable[P]) -> None:
        """Stop tracking partitions (after they were revoked); their unacknowledged batches are never committed."""
        for partition in partitions:
            self._queues.pop(partition, None)
            self._committable.pop(partition, None)
            self._changed.discard(partition)
        if self._drain_waiters:
            self._wake_drained()
