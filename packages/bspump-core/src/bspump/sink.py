"""Sinks write events out and acknowledge them once durably written.

Three bases, from the simplest up:

- :class:`Sink`: ``put`` takes each batch synchronously on the pipeline's hot path (in-memory sinks).
- :class:`WriterSink`: ``put`` queues, a writer task of the sink's own writes (what the other two build on).
- :class:`~bspump.AsyncSink` (``bspump.async_sink``): awaitable batch writes with retries, optionally several
  batches in flight; and :class:`~bspump.StreamingSink` (``bspump.streaming_sink``): clients that send now and
  confirm later (Kafka delivery reports, MQTT PUBACK).
"""

from __future__ import annotations

import abc
import asyncio
import logging
from typing import Any, ClassVar

from .batch import Batch
from .component import Component
from .failures import ItemFailure

__all__ = ["ItemFailure", "Sink", "WriterSink"]

log = logging.getLogger("bspump.sink")


class Sink(Component):
    """Base class of sinks; the last component of a pipeline.

    Call order: :meth:`start` when the pipeline starts; :meth:`put` for every batch, synchronously from
    the pipeline's hot path; :meth:`flush` at stop (write out everything buffered and wait for the
    acknowledgements); :meth:`close` last. A sink must eventually call ``batch.delivery.ack(n)`` for
    every event it wrote; until it does, the events count as in flight and throttle the pipeline.
    Writes that need I/O belong in :class:`~bspump.AsyncSink`.
    """

    _bspump_base: ClassVar[bool] = True

    @abc.abstractmethod
    def put(self, batch: Batch) -> None:
        """Take a batch; acknowledge its events when written. Called on the hot path: do not block."""

    async def start(self) -> None:
        """Prepare for writing (open files, start writer tasks); called once when the pipeline starts."""

    async def flush(self) -> None:
        """Write out everything buffered and wait until it is acknowledged; called at stop."""

    async def close(self) -> None:
        """Release resources; called last, nothing is written after this."""

    @property
    def is_dead_letter(self) -> bool:
        """True when this sink is its pipeline's dead-letter sink (its events carry ``error`` in context)."""
        return self is self.pipeline.dead_letter_sink


class WriterSink(Sink):
    """A sink whose writes run in a task of its own, :meth:`write_loop`, which ``put`` wakes.

    The base owns the task's life: started with the pipeline, waited for by :meth:`flush` until
    :meth:`is_idle` says everything put so far was written or handed to the error policy, cancelled by
    :meth:`close`. If the loop crashes, the error is logged and the pipeline stops, rather than events
    piling up unwritten until the next flush finds the error.

    A subclass queues in ``put`` and calls :meth:`notify`; its ``write_loop`` takes from the queue and calls
    :meth:`wait_for_work` when the queue is empty. Work that completes outside the loop (a client's
    confirmation callback) calls :meth:`settled`, so that a waiting ``flush`` sees the sink become idle.
    """

    _bspump_base: ClassVar[bool] = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._work = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._writer: asyncio.Task[None] | None = None

    @abc.abstractmethod
    async def write_loop(self) -> None:
        """The writer task, from :meth:`start` until :meth:`close`: write what ``put`` queued, for ever."""

    @abc.abstractmethod
    def is_idle(self) -> bool:
        """True when everything put so far was written (acknowledged) or handed to the error policy."""

    def notify(self) -> None:
        """Say that there is work: wakes the writer and makes :meth:`flush` wait. Call it from ``put``."""
        self._idle.clear()
        self._work.set()

    def settled(self) -> None:
        """Say that work finished outside the writer (a confirmation arrived): wakes a waiting flush if idle."""
        if self.is_idle():
            self._idle.set()

    async def wait_for_work(self, until: asyncio.Future[Any] | None = None) -> None:
        """Call from :meth:`write_loop` when nothing is queued: marks the sink idle if :meth:`is_idle`
        agrees, then returns at the next :meth:`notify` (or once ``until`` is done, if given)."""
        if self.is_idle():
            self._idle.set()
        self._work.clear()
        if until is None:
            await self._work.wait()
            return
        waiter = asyncio.ensure_future(self._work.wait())
        try:
            await asyncio.wait({waiter, until}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()

    async def start(self) -> None:
        if self._writer is None:
            self._writer = asyncio.create_task(self.write_loop(), name=f"sink:{self.qualified_id}")
            self._writer.add_done_callback(self._writer_done)

    def _writer_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        assert error is not None
        log.error("%s: writer crashed (%s: %s); the pipeline stops", self.qualified_id, type(error).__name__, error)
        log.debug("%s: writer traceback", self.qualified_id, exc_info=error)
        self.pipeline.fail(error)

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
