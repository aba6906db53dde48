"""Sinks write events out and acknowledge them once durably written."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from .batch import Batch
from .component import Component

log = logging.getLogger("bspump.sink")


class Sink(Component):
    """Base class of sinks; the last component of a pipeline.

    Call order: :meth:`start` when the pipeline starts; :meth:`put` for every batch, synchronously from
    the pipeline's hot path; :meth:`flush` at stop (write out everything buffered and wait for the
    acknowledgements); :meth:`close` last. A sink must eventually call ``batch.delivery.ack(n)`` for
    every event it wrote; until it does, the events count as in flight and throttle the pipeline.
    Writes that need I/O belong in :class:`AsyncSink`.
    """

    _bspump_base: ClassVar[bool] = True

    def put(self, batch: Batch) -> None:
        """Take a batch; acknowledge its events when written."""
        raise NotImplementedError(f"{type(self).__name__} must implement put(batch)")

    async def start(self) -> None:
        """Prepare for writing (open files, start writer tasks)."""

    async def flush(self) -> None:
        """Write out everything buffered and wait until it is acknowledged."""

    async def close(self) -> None:
        """Release resources; nothing is written after this."""

    @property
    def is_dead_letter(self) -> bool:
        """True when this sink is its pipeline's dead-letter sink (its events carry ``error`` in context)."""
        return self is getattr(self.pipeline, "dead_letter_sink", None)


@dataclass(frozen=True, slots=True)
class ItemFailure:
    """One event of a batch that a sink could not write.

    ``retryable``: worth ``retry_attempts`` more tries before the error policy applies (a timeout, a
    throttled request). ``transient``: a link problem (no leader, connection lost) rather than anything
    about the event, so it is retried with backoff for as long as it takes, like a failed write as a whole.
    """

    index: int
    error: BaseException
    retryable: bool = False
    transient: bool = False


class WriterSink(Sink):
    """A sink whose writes run in a task of their own, :meth:`_write_loop`, which ``put`` wakes.

    It owns the task's life: started with the pipeline, waited for by :meth:`flush` until the loop sets
    ``_idle`` (everything put so far written or handed to the error policy), cancelled by :meth:`close`.
    If the loop crashes, the error is logged and the pipeline stops, rather than events piling up
    unwritten until the next flush finds the error.
    """

    _bspump_base: ClassVar[bool] = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._writer: asyncio.Task[None] | None = None

    async def _write_loop(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement async _write_loop()")

    async def start(self) -> None:
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_loop(), name=f"sink:{self.qualified_id}")
            self._writer.add_done_callback(self._writer_done)

    def _writer_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        log.error("%s: writer crashed; the pipeline stops", self.qualified_id, exc_info=error)
        self.pipeline._fail(error)

    async def flush(self) -> None:
        """Wait until the writer is idle, or raise what it crashed with meanwhile."""
        writer = self._writer
        if writer is None:
            return
        waiter = asyncio.create_task(self._idle.wait())
        done, _ = await asyncio.wait({waiter, writer}, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
        if writer in done and not writer.cancelled():
            error = writer.exception()
            if error is not None:
                raise error

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)


class AsyncSink(WriterSink):
    """A sink that writes batches with ``await``, in order, from a writer task of its own.

    Subclasses implement :meth:`write`, which the writer calls for each batch once every connection the
    sink uses is ready. ``write`` returns ``None`` when everything was written, or the
    :class:`ItemFailure` of each event that was not (the rest count as written). An exception that
    :meth:`is_transient` accepts (by default ``OSError`` and ``TimeoutError``) means nothing is known
    to be written: the connection is told, and the batch is retried with backoff until it succeeds.
    Item failures marked retryable are retried ``retry_attempts`` times; what still fails, and
    non-retryable failures, go to the pipeline's error policy (stop, skip or dead-letter).
    """

    _bspump_base: ClassVar[bool] = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._queue: deque[Batch] = deque()
        self.write_errors = 0

    async def write(self, batch: Batch) -> Sequence[ItemFailure] | None:
        """Write ``batch`` durably; return the failures of individual events, or ``None``."""
        raise NotImplementedError(f"{type(self).__name__} must implement async write(batch)")

    def is_transient(self, error: BaseException) -> bool:
        """Whether a failed ``write`` call should be retried as a whole (a link problem, not bad data)."""
        return isinstance(error, OSError | TimeoutError)

    def put(self, batch: Batch) -> None:
        self._queue.append(batch)
        self._idle.clear()
        self._wake.set()

    async def _write_loop(self) -> None:
        queue = self._queue
        while True:
            if not queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = queue[0]
            await self._deliver(batch)
            queue.popleft()

    async def _deliver(self, batch: Batch) -> None:
        backoff = self.pipeline.retry_backoff()
        while True:
            for connection in self.connections:
                if not connection.ready:
                    await connection.wait_ready()
            try:
                failures = await self.write(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.write_errors += 1
                if not self.is_transient(exc):
                    failures = [ItemFailure(i, exc) for i in range(len(batch))]
                else:
                    delay = backoff.next_delay()
                    log.warning(
                        "%s: write of %d events failed (%s: %s); retrying in %.2fs",
                        self.qualified_id, len(batch), type(exc).__name__, exc, delay,
                    )
                    for connection in self.connections:
                        connection.report_failure(exc)
                    await asyncio.sleep(delay)
                    continue
            break
        failures = list(failures or ())
        written = len(batch) - len(failures)
        if written:
            batch.delivery.ack(written)
        if failures:
            await self._handle_failures(batch, failures)

    async def _handle_failures(self, batch: Batch, failures: list[ItemFailure]) -> None:
        pipeline = self.pipeline
        attempts_left = pipeline.retry_attempts
        backoff = pipeline.retry_backoff()
        final = [f for f in failures if not (f.retryable or f.transient)]
        retrying = [f for f in failures if f.retryable or f.transient]
        while retrying:
            if attempts_left <= 0:
                # Out of attempts: transient failures go on (the link will come back), the rest meet the policy.
                final.extend(f for f in retrying if not f.transient)
                retrying = [f for f in retrying if f.transient]
                if not retrying:
                    break
            attempts_left -= 1
            delay = backoff.next_delay()
            link_failure = next((f for f in retrying if f.transient), None)
            if link_failure is not None:
                log.warning("%s: %d events not written (%s: %s); retrying in %.2fs", self.qualified_id,
                            len(retrying), type(link_failure.error).__name__, link_failure.error, delay)
                for connection in self.connections:
                    connection.report_failure(link_failure.error)
            await asyncio.sleep(delay)
            for connection in self.connections:
                if not connection.ready:
                    await connection.wait_ready()
            indexes = [f.index for f in retrying]
            subset = batch.subset(indexes)
            try:
                again = list(await self.write(subset) or ())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                is_link = self.is_transient(exc)
                again = [ItemFailure(i, exc, is_link, is_link) for i in range(len(subset))]
            # Map indexes of the subset back to the original batch.
            again = [ItemFailure(indexes[f.index], f.error, f.retryable, f.transient) for f in again]
            written = len(subset) - len(again)
            if written:
                batch.delivery.ack(written)
            retrying = [f for f in again if f.retryable or f.transient]
            final.extend(f for f in again if not (f.retryable or f.transient))
        for failure in final:
            pipeline.handle_sink_failure(self, batch, failure.index, failure.error)
