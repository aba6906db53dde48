"""AckLedger: acknowledgements leave in arrival order, only for settled messages, never after a reconnect."""

from __future__ import annotations

from bspump.mqtt.ledger import AckLedger, settle


def test_acknowledges_from_the_front_as_far_as_settled() -> None:
    sent: list[tuple[int, int]] = []
    ledger = AckLedger(lambda mid, qos: sent.append((mid, qos)))
    receipts = [ledger.received(mid, 1 + mid % 2) for mid in (10, 11, 12, 13)]
    assert settle([receipts[1], receipts[2]]) == 0 and sent == []
    assert settle([receipts[0]]) == 3
    assert sent == [(10, 1), (11, 2), (12, 1)]
    assert len(ledger) == 1
    settle([receipts[3]])
    assert sent[-1] == (13, 2) and len(ledger) == 0 and ledger.acknowledged == 4


def test_a_closed_ledger_acknowledges_nothing() -> None:
    sent: list[tuple[int, int]] = []
    old = AckLedger(lambda mid, qos: sent.append((mid, qos)))
    stale = old.received(1, 1)
    old.close()  # the link dropped: the broker resends message 1 under the new connection
    new = AckLedger(lambda mid, qos: sent.append((mid, qos)))
    fresh = new.received(1, 1)
    assert settle([stale]) == 0 and sent == []
    assert settle([fresh]) == 1 and sent == [(1, 1)]


def test_settle_spans_ledgers() -> None:
    sent: list[str] = []
    first = AckLedger(lambda mid, qos: sent.append(f"a{mid}"))
    second = AckLedger(lambda mid, qos: sent.append(f"b{mid}"))
    receipts = [first.received(1, 1), second.received(1, 1), first.received(2, 1)]
    assert settle(receipts) == 3
    assert sent == ["a1", "a2", "b1"]
