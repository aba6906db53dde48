"""Inbox: where the connection puts the messages of one source's subscriptions until the source reads them."""

from __future__ import annotations

import asyncio
import logging
from collections import deque

import aiomqtt

from .ledger import Receipt

log = logging.getLogger("bspump.mqtt")


class Inbox:
    """Messages for one source, in arrival order, each with the receipt that acknowledges it (``None`` for
    QoS 0).

    QoS 1/2 messages are always kept: their number is bounded by the broker's flow control (MQTT 5 receive
    maximum, or the broker's own in-flight limit under 3.1.1), because they are acknowledged only after the
    sink. QoS 0 messages have no flow control in MQTT; beyond ``qos0_limit`` waiting ones, new QoS 0
    messages are dropped and counted in :attr:`dropped` (at most once, as QoS 0 promises), instead of
    growing memory without bound behind a slow sink.
    """

    __slots__ = ("_arrived", "dropped", "label", "messages", "qos0_limit", "qos0_waiting")

    def __init__(self, label: str, qos0_limit: int) -> None:
        self.label = label
        self.qos0_limit = qos0_limit
        self.messages: deque[tuple[aiomqtt.Message, Receipt | None]] = deque()
        self.qos0_waiting = 0
        #: QoS 0 messages dropped because ``qos0_limit`` were waiting.
        self.dropped = 0
        self._arrived = asyncio.Event()

    def put(self, message: aiomqtt.Message, receipt: Receipt | None) -> None:
        """Called by the connection for each message that matches one of the source's subscriptions."""
        if receipt is None:
            if self.qos0_waiting >= self.qos0_limit:
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 10000 == 0:
                    log.warning("%s: %d QoS 0 messages dropped so far: %d were waiting for a slow pipeline "
                                "(qos0_limit); use QoS 1 for messages that must not be lost",
                                self.label, self.dropped, self.qos0_limit)
                return
            self.qos0_waiting += 1
        self.messages.append((message, receipt))
        self._arrived.set()

    def take(self, limit: int) -> list[tuple[aiomqtt.Message, Receipt | None]]:
        """Up to ``limit`` of the oldest messages, removed from the inbox."""
        messages = self.messages
        count = min(limit, len(messages))
        taken = [messages.popleft() for _ in range(count)]
        if self.qos0_waiting:
            self.qos0_waiting -= sum(1 for _, receipt in taken if receipt is None)
        if not messages:
            self._arrived.clear()
        return taken

    def forget_resent(self) -> int:
        """Drop QoS 1 messages of a previous connection that were not read yet: the broker resumed the
        session and sends them again. (A QoS 2 message is kept: the broker resends only its release.)
        Returns how many were dropped."""
        kept: deque[tuple[aiomqtt.Message, Receipt | None]] = deque()
        dropped = 0
        for message, receipt in self.messages:
            if receipt is not None and receipt.qos == 1 and receipt.ledger.closed:
                dropped += 1
            else:
                kept.append((message, receipt))
        self.messages = kept
        if not kept:
            self._arrived.clear()
        return dropped

    async def wait(self, timeout: float | None) -> None:
        """Return once a message is waiting, or after ``timeout`` seconds (``None``: no limit)."""
        if self.messages:
            return
        try:
            async with asyncio.timeout(timeout):
                await self._arrived.wait()
        except TimeoutError:
            pass

    def __len__(self) -> int:
        return len(self.messages)
