"""Delivery tokens and PositionTracker: at-least-once commit bookkeeping."""

from __future__ import annotations

import asyncio

from bspump import Delivery, PositionTracker


class Listener:
    def __init__(self) -> None:
        self.acked = 0
        self.failures: list[BaseException] = []

    def settled(self, count: int) -> None:
        self.acked += count

    def delivery_failed(self, delivery: Delivery, error: BaseException) -> None:
        self.failures.append(error)


def test_delivery_completes_after_seal_and_last_ack() -> None:
    done: list[Delivery] = []
    d = Delivery({"p0": 10}, on_complete=done.append)
    d.add(3)
    d.seal()
    assert not d.completed
    d.ack(2)
    assert not d.completed and d.pending == 1
    d.ack()
    assert d.completed and done == [d]
    d.ack(0)  # completes once
    assert done == [d]


def test_delivery_acked_before_seal_completes_only_at_seal() -> None:
    done: list[Delivery] = []
    d = Delivery(on_complete=done.append)
    d.add(2)
    d.ack(2)  # a synchronous sink acknowledges inside put(), before the pipeline seals
    assert not d.completed and done == []
    d.seal()
    assert d.completed and done == [d]


def test_empty_delivery_completes_at_seal() -> None:
    """A batch whose events were all filtered out is deliberately dropped: its position may commit."""
    done: list[Delivery] = []
    d = Delivery(on_complete=done.append)
    d.seal()
    assert d.completed and done == [d]


def test_failed_delivery_never_completes_and_reports_to_its_listener() -> None:
    done: list[Delivery] = []
    listener = Listener()
    d = Delivery(on_complete=done.append)
    d.listener = listener
    d.add(3)
    d.seal()
    d.ack(1)
    error = RuntimeError("bad item")
    d.fail(error)
    assert d.failed is error
    d.ack(1)
    assert d.pending == 0
    assert not d.completed and done == []
    assert listener.acked == 3  # in-flight accounting still releases the events
    assert listener.failures == [error]
    assert "failed" in repr(d)


def test_tracker_commits_highest_contiguous_position_never_past_a_gap() -> None:
    tracker = PositionTracker()
    deliveries = [tracker.track({0: offset}) for offset in (10, 20, 30, 40)]
    for d in deliveries:
        d.add(1)
        d.seal()
    deliveries[1].ack()  # out of order: 20 done, 10 still pending
    deliveries[3].ack()
    assert tracker.take_committable() == {}
    assert tracker.committed_view() == {}
    assert tracker.pending() == 4
    deliveries[0].ack()  # the gap closes: 10 and 20 are contiguous, 30 is not yet
    assert tracker.take_committable() == {0: 20}
    assert tracker.take_committable() == {}, "only advances are returned"
    assert tracker.pending() == 2
    deliveries[2].ack()
    assert tracker.take_committable() == {0: 40}
    assert tracker.pending() == 0


def test_tracker_never_commits_past_a_failed_batch() -> None:
    tracker = PositionTracker()
    first, second = tracker.track({"p": 1}), tracker.track({"p": 2})
    for d in (first, second):
        d.add(1)
        d.seal()
    first.fail(RuntimeError("stop policy"))
    second.ack()
    assert tracker.take_committable() == {}
    assert tracker.pending(["p"]) == 2


def test_tracker_multi_partition_batches() -> None:
    tracker = PositionTracker()
    a = tracker.track({0: 5, 1: 7})
    b = tracker.track({1: 9})
    c = tracker.track({0: 8, 2: 3})
    for d in (a, b, c):
        d.add(2)
        d.seal()
    c.ack(2)
    assert tracker.take_committable() == {2: 3}  # partition 2 has nothing before c
    b.ack(2)
    assert tracker.take_committable() == {}  # partition 1 waits for a
    a.ack(1)
    assert tracker.take_committable() == {}
    a.ack(1)
    assert tracker.take_committable() == {0: 8, 1: 9}
    assert tracker.committed_view() == {0: 8, 1: 9, 2: 3}


def test_take_committable_for_some_partitions_keeps_the_others() -> None:
    tracker = PositionTracker()
    for partition, position in ((0, 1), (1, 1)):
        d = tracker.track({partition: position})
        d.seal()
    assert tracker.take_committable([0]) == {0: 1}
    assert tracker.take_committable([0]) == {}
    assert tracker.take_committable() == {1: 1}


def test_forget_drops_revoked_partitions() -> None:
    tracker = PositionTracker()
    kept, revoked = tracker.track({0: 1}), tracker.track({1: 1})
    late = tracker.track({1: 2})
    for d in (kept, revoked, late):
        d.add(1)
        d.seal()
    revoked.ack()
    tracker.forget([1])
    assert tracker.pending() == 1
    late.ack()  # acknowledged after the partition was revoked: nothing to commit for it
    kept.ack()
    assert tracker.take_committable() == {0: 1}
    assert 1 not in tracker.committed_view()


async def test_wait_drained_returns_true_once_acked_and_false_on_timeout() -> None:
    tracker = PositionTracker()
    slow = tracker.track({0: 1})
    other = tracker.track({1: 1})
    for d in (slow, other):
        d.add(1)
        d.seal()
    assert await tracker.wait_drained(timeout=0.02) is False
    other.ack()
    assert await tracker.wait_drained([1], timeout=0.5) is True
    assert await tracker.wait_drained([0], timeout=0.02) is False
    asyncio.get_running_loop().call_later(0.02, slow.ack)
    assert await tracker.wait_drained(timeout=2.0) is True
    assert tracker.take_committable() == {0: 1, 1: 1}


async def test_wait_drained_wakes_on_the_acknowledgement_and_on_forget() -> None:
    tracker = PositionTracker()
    first = tracker.track({0: 1})
    second = tracker.track({1: 1})
    for d in (first, second):
        d.add(1)
        d.seal()
    waiter = asyncio.create_task(tracker.wait_drained([0], timeout=5.0))
    await asyncio.sleep(0)
    first.ack()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert waiter.done() and waiter.result() is True  # woken by the ack itself, not by a timer
    forgotten = asyncio.create_task(tracker.wait_drained(timeout=5.0))
    await asyncio.sleep(0)
    tracker.forget([1])  # a revoked partition is never acknowledged: nothing is pending any more
    assert await forgotten is True
    assert tracker._drain_waiters == []
