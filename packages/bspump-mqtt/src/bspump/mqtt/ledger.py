"""AckLedger: acknowledges received QoS 1/2 messages to the broker in the order they arrived.

MQTT wants PUBACK/PUBCOMP sent in the order the PUBLISH packets were received. Sources settle messages in
their own order (several sources share one client, and each settles when its sink acknowledged), so the
ledger keeps every unacknowledged message of one connection in arrival order and sends acknowledgements
from the front as far as the messages there are settled.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

SendAck = Callable[[int, int], None]


class Receipt:
    """One received QoS 1/2 message: its packet id, its QoS, and whether its sink acknowledged it."""

    __slots__ = ("ledger", "mid", "qos", "settled")

    def __init__(self, ledger: AckLedger, mid: int, qos: int) -> None:
        self.ledger = ledger
        self.mid = mid
        self.qos = qos
        self.settled = False


class AckLedger:
    """The unacknowledged messages of one MQTT connection (one network session), oldest first.

    ``send_ack(mid, qos)`` is called in arrival order, each time the oldest messages are settled. A ledger
    belongs to one connection: after a reconnect the broker sends the unacknowledged messages again under
    packet ids of the new connection, so the old ledger is :meth:`closed <close>` and acknowledges nothing
    more (its receipts may still be settled, to no effect).
    """

    __slots__ = ("_pending", "_send_ack", "acknowledged", "closed")

    def __init__(self, send_ack: SendAck) -> None:
        self._send_ack = send_ack
        self._pending: deque[Receipt] = deque()
        self.closed = False
        #: Acknowledgements sent so far.
        self.acknowledged = 0

    def received(self, mid: int, qos: int) -> Receipt:
        """Record a QoS 1/2 message as it arrives; settle the returned receipt once it was processed."""
        receipt = Receipt(self, mid, qos)
        self._pending.append(receipt)
        return receipt

    def release(self) -> int:
        """Send acknowledgements for the settled messages at the front; returns how many were sent."""
        pending = self._pending
        if self.closed:
            return 0
        send = self._send_ack
        sent = 0
        while pending and pending[0].settled:
            receipt = pending.popleft()
            send(receipt.mid, receipt.qos)
            sent += 1
        self.acknowledged += sent
        return sent

    def close(self) -> None:
        """The connection this ledger belongs to is gone: acknowledge nothing more."""
        self.closed = True
        self._pending.clear()

    def __len__(self) -> int:
        """Messages received and not acknowledged yet."""
        return len(self._pending)


def settle(receipts: Iterable[Receipt]) -> int:
    """Mark ``receipts`` as processed and release what their ledgers can acknowledge now, in order."""
    ledgers: list[AckLedger] = []
    for receipt in receipts:
        receipt.settled = True
        ledger = receipt.ledger
        if not ledgers or ledgers[-1] is not ledger:
            ledgers.append(ledger)
    return sum(ledger.release() for ledger in dict.fromkeys(ledgers))
