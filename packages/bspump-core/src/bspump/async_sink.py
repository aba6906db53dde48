"""AsyncSink: a sink whose client writes a batch with ``await`` and answers per event (bulk APIs, databases)."""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, ClassVar

from .batch import Batch
from .config import Int, Seconds
from .failures import ItemFailure
from .policy import triage
from .sink import WriterSink

log = logging.getLogger("bspump.sink")

#: What settling one batch came to: how many events were written, and the failures the policy gets.
Outcome = tuple[int, list[ItemFailure]]


class AsyncSink(WriterSink):
    """A sink that writes batches with ``await``, from a writer task of its own.

    Subclasses implement :meth:`write`, which the writer calls for each batch once every connection the
    sink uses is ready. ``write`` returns ``None`` when everything was written, or an
    :class:`~bspump.ItemFailure` for each event that was not (the rest count as written); an exception means
    that nothing of the batch is known to be written. Each failure is classified by the sink's connection
    (:meth:`bspump.Connection.classify`) unless the sink set its ``kind``:

    - ``LINK``: the connection is told (it reconnects; the pipeline pauses) and the events are written again
      once it is ready, for as long as that takes;
    - ``TRANSIENT`` (a timeout, a throttled or deadlocked request): written again with the pipeline's retry
      backoff for up to ``retry_timeout`` seconds (0: for ever), then the pipeline's error policy applies;
    - ``PERMANENT``: the pipeline's error policy applies at once (stop, skip or dead-letter).

    ``concurrency`` batches are written at the same time (bulk APIs and connection pools are faster with
    several requests in flight; ``write`` must then be safe to run concurrently), and batches are still
    acknowledged in the order they were put, so sources see their deliveries complete in order.
    """

    _bspump_base: ClassVar[bool] = True
    ConfigDefaults: ClassVar[dict[str, Any]] = {
        "concurrency": Int(1, min=1, max=256),
        "retry_timeout": Seconds(60.0, min=0.0),
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.concurrency = self.Config.getint("concurrency")
        self.retry_timeout = self.Config.getseconds("retry_timeout")
        self._queue: deque[Batch] = deque()
        self._running: deque[tuple[Batch, asyncio.Task[Outcome]]] = deque()
        #: ``write`` calls that raised (each retried or handed to the policy).
        self.write_errors = 0

    @abc.abstractmethod
    async def write(self, batch: Batch) -> Sequence[ItemFailure] | None:
        """Write ``batch`` durably; return the failures of individual events, or ``None``.

        Called from the writer task (``concurrency`` calls at a time), with the batch as put or with the
        subset of its events being tried again; indexes of the failures refer to the batch passed.
        """

    def put(self, batch: Batch) -> None:
        self._queue.append(batch)
        self.notify()

    def is_idle(self) -> bool:
        return not self._queue and not self._running

    async def write_loop(self) -> None:
        if self.concurrency == 1:
            await self._write_in_turn()
        else:
            await self._write_concurrently()

    async def _write_in_turn(self) -> None:
        queue = self._queue
        while True:
            if not queue:
                await self.wait_for_work()
                continue
            batch = queue[0]  # stays queued until settled, so that the sink is not idle meanwhile
            outcome = await self.settle(batch)
            queue.popleft()
            self._finish(batch, outcome)

    async def _write_concurrently(self) -> None:
        queue = self._queue
        running = self._running
        try:
            while True:
                while queue and len(running) < self.concurrency:
                    batch = queue.popleft()
                    task = asyncio.create_task(self.settle(batch), name=f"write:{self.qualified_id}")
                    running.append((batch, task))
                if not running:
                    await self.wait_for_work()
                    continue
                head = running[0][1]
                if len(running) < self.concurrency:
                    await self.wait_for_work(until=head)  # room for more: also wake when a batch is put
                else:
                    await asyncio.wait({head})
                while running and running[0][1].done():  # acknowledge in the order the batches were put
                    batch, task = running.popleft()
                    self._finish(batch, task.result())
        finally:
            for _, task in running:
                task.cancel()
            await asyncio.gather(*(task for _, task in running), return_exceptions=True)
            running.clear()

    async def settle(self, batch: Batch) -> Outcome:
        """Write ``batch`` until every event is written or final: returns how many were written and the
        failures that meet the error policy. Transient and link failures are written again (see the class)."""
        written = 0
        final: list[ItemFailure] = []
        indexes: list[int] | None = None  # the events to write again; None: the whole batch
        failing_since: float | None = None
        backoff = None
        while True:
            await self.wait_connections_ready()
            part = batch if indexes is None else batch.subset(indexes)
            try:
                failures = list(await self.write(part) or ())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.write_errors += 1
                failures = [ItemFailure(i, exc) for i in range(len(part))]
            written += len(part) - len(failures)
            if not failures:
                return written, final
            if indexes is not None:
                failures = [dataclasses.replace(f, index=indexes[f.index]) for f in failures]
            if failing_since is None:
                failing_since = time.monotonic()
            sorted_out = triage(self, failures, failing_since, self.retry_timeout)
            final.extend(sorted_out.final)
            if sorted_out.expired:
                log.warning("%s: %d events still failing after retry_timeout=%ss; the error policy applies",
                            self.qualified_id, sorted_out.expired, self.retry_timeout)
            if not sorted_out.retry:
                return written, final
            backoff = backoff or self.pipeline.retry_backoff()
            delay = backoff.next_delay()
            error = sorted_out.link_error or sorted_out.retry[0].error
            log.warning("%s: %d of %d events not written (%s: %s); retrying in %.2fs", self.qualified_id,
                        len(sorted_out.retry), len(batch), type(error).__name__, error, delay)
            if sorted_out.link_error is not None:
                for connection in self.connections:
                    connection.report_failure(sorted_out.link_error)
            await asyncio.sleep(delay)
            indexes = [f.index for f in sorted_out.retry]

    def _finish(self, batch: Batch, outcome: Outcome) -> None:
        written, final = outcome
        if written:
            batch.ack(written)
        for failure in final:
            self.pipeline.handle_sink_failure(self, batch, failure.index, failure.error)
