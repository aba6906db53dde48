"""StreamingSink: a sink whose client sends at once and confirms each event later (Kafka, MQTT)."""

from __future__ import annotations

import abc
import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from .batch import Batch
from .config import Int, Seconds
from .failures import ItemFailure
from .policy import triage
from .sink import WriterSink

log = logging.getLogger("bspump.sink")

#: What :meth:`StreamingSink.send` calls, once, when the client answered for every event of the batch.
Confirm = Callable[[Sequence[ItemFailure]], None]


class StreamingSink(WriterSink):
    """A sink for clients that take events now and confirm them later: Kafka delivery reports, MQTT PUBACK.

    Subclasses implement :meth:`send`, which hands one batch to the client and arranges for ``confirm`` to be
    called once the client answered for every event of it; :meth:`open_client` starts the client. The base
    does the rest:

    - batches are sent in order from the writer task, each as soon as the previous one was handed over (not
      confirmed), so several are in flight at once; the pipeline pauses while ``queue_limit`` batches wait
      to be handed over (keeping the source just ahead of the client: batches processed long before they
      are sent have left the CPU caches);
    - an event is acknowledged upstream only when the client confirmed it;
    - events the client refused are classified by the sink's connection: ``LINK`` and ``TRANSIENT`` ones are
      sent again (only those, after the pipeline's retry backoff, waited once for every batch refused in
      the same outage rather than once per batch; the connection is told of link failures),
      transient ones for up to ``retry_timeout`` seconds (0: for as long as it takes); ``PERMANENT`` ones,
      and what outlived its retries, meet the pipeline's error policy;
    - ``flush`` (at stop) returns once everything put was confirmed or handed to the policy.

    Events are handed over in order, but a batch whose events had to be sent again completes after batches
    sent later (unlike :class:`~bspump.AsyncSink`, which acknowledges batches in order).
    """

    _bspump_base: ClassVar[bool] = True
    ConfigDefaults: ClassVar[dict[str, Any]] = {
        "queue_limit": Int(2, min=1, max=1000),
        "retry_timeout": Seconds(0.0, min=0.0),
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue_limit = self.Config.getint("queue_limit")
        self.retry_timeout = self.Config.getseconds("retry_timeout")
        # (batch, attempt, monotonic time of its first failure) waiting to be handed to the client
        self._queue: deque[tuple[Batch, int, float | None]] = deque()
        self._outstanding = 0  # sends not confirmed yet
        self._backoff = self.pipeline.retry_backoff()
        # Resends wait until then: one backoff delay per wave of refusals (an outage refuses every batch in
        # flight at once; each of them waiting its own, growing delay would add up to a long stall).
        self._resend_at = 0.0
        self._queue_throttle = f"sink {self.id} queue"
        #: Events the client confirmed; events sent again after a failure.
        self.sent = 0
        self.resent = 0

    # -- what a subclass implements ---------------------------------------------------------------------------
    async def open_client(self) -> None:
        """Start the client: called once in the writer task, after the connections are ready and before the
        first :meth:`send` (so a producer starts while the source still joins its group). Use
        :meth:`~bspump.Component.start_client` to retry while the link is down. Close it in :meth:`close`
        (after ``await super().close()``, which stops the writer first)."""

    @abc.abstractmethod
    async def send(self, batch: Batch, confirm: Confirm) -> None:
        """Hand the events of ``batch`` to the client; called from the writer task, batch after batch, once
        the connections are ready.

        Arrange for ``confirm(failures)`` to be called exactly once, on the event loop, when the client
        answered for every event: ``failures`` holds an :class:`~bspump.ItemFailure` (index into ``batch``)
        for each event it refused or that could not even be handed over (a value that does not encode), and
        is empty when all were taken. Return as soon as the events are handed over; raising instead means
        that none of them was (each then fails with that error).
        """

    # -- framework API --------------------------------------------------------------------------------------
    def put(self, batch: Batch) -> None:
        queue = self._queue
        queue.append((batch, 0, None))
        self.notify()
        if len(queue) >= self.queue_limit:
            self.pipeline.throttle(self._queue_throttle)

    def is_idle(self) -> bool:
        return not self._queue and self._outstanding == 0

    async def write_loop(self) -> None:
        await self.wait_connections_ready()
        await self.open_client()
        queue = self._queue
        while True:
            if not queue:
                await self.wait_for_work()
                continue
            batch, attempt, failing_since = queue.popleft()
            if len(queue) < self.queue_limit:
                self.pipeline.unthrottle(self._queue_throttle)
            if attempt:
                wait = self._resend_at - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            await self.wait_connections_ready()
            self._outstanding += 1
            confirm = functools.partial(self._confirmed, batch, attempt, failing_since)
            try:
                await self.send(batch, confirm)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s: handing %d events to the client failed (%s: %s)", self.qualified_id, len(batch),
                            type(exc).__name__, exc)
                confirm([ItemFailure(i, exc) for i in range(len(batch))])

    def _confirmed(self, batch: Batch, attempt: int, failing_since: float | None,
                   failures: Sequence[ItemFailure]) -> None:
        """Runs on the event loop once the client answered for every event of one send."""
        self._outstanding -= 1
        written = len(batch) - len(failures)
        if written:
            self.sent += written
            batch.ack(written)
        if failures:
            self._retry_or_fail(batch, attempt, failing_since or time.monotonic(), failures)
        else:
            self._backoff.reset()
        self.settled()

    def _retry_or_fail(self, batch: Batch, attempt: int, failing_since: float,
                       failures: Sequence[ItemFailure]) -> None:
        sorted_out = triage(self, failures, failing_since, self.retry_timeout)
        if sorted_out.expired:
            log.warning("%s: %d events still refused after retry_timeout=%ss; the error policy applies",
                        self.qualified_id, sorted_out.expired, self.retry_timeout)
        for failure in sorted_out.final:
            self.pipeline.handle_sink_failure(self, batch, failure.index, failure.error)
        retry = sorted_out.retry
        if not retry:
            return
        error = sorted_out.link_error or retry[0].error
        log.warning("%s: %d events not confirmed (%s: %s); sending them again (attempt %d)",
                    self.qualified_id, len(retry), type(error).__name__, error, attempt + 1)
        self.resent += len(retry)
        now = time.monotonic()
        if now >= self._resend_at:  # the first refusal of a wave sets its delay; the others share it
            self._resend_at = now + self._backoff.next_delay()
        self._queue.appendleft((batch.subset([f.index for f in retry]), attempt + 1, failing_since))
        self.notify()
        if sorted_out.link_error is not None:
            for connection in self.connections:
                connection.report_failure(sorted_out.link_error)
