"""Sources read events from the outside world and hand them to their pipeline in batches."""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from .batch import Context
from .component import Component
from .config import Int, Seconds
from .delivery import Delivery

if TYPE_CHECKING:
    from .application import BSPumpApplication
    from .pipeline import Pipeline


class Source(Component):
    """Base class of sources.

    Call order: the pipeline starts :meth:`main` in a task of its own once the application runs;
    ``main`` reads and calls :meth:`emit` for each batch (``emit`` waits while the pipeline is
    throttled). Returning from ``main`` means the source is exhausted. On stop the task is cancelled at
    its current ``await``; after the pipeline drained, :meth:`on_drained` runs (commit positions there),
    then :meth:`close`.
    """

    _bspump_base: ClassVar[bool] = True

    @abc.abstractmethod
    async def main(self) -> None:
        """Read from the outside world and :meth:`emit` batches until exhausted or cancelled; runs in a task
        of its own, started when the pipeline starts and cancelled at its current ``await`` on stop."""

    async def emit(
        self,
        events: list[Any],
        context: Context | None = None,
        contexts: Sequence[Context] | None = None,
        delivery: Delivery | None = None,
    ) -> None:
        """Hand a batch to the pipeline; returns once it left the processors (sinks ack later). Waits while
        the pipeline is throttled; raises PipelineStoppedError once it is stopping. ``contexts`` (one per
        event) may be :class:`~bspump.LazyContexts`, built only where a processor or the sink reads them."""
        self.counters.events_out += len(events)
        await self.pipeline.emit(events, context, contexts, delivery)

    async def on_drained(self) -> None:
        """Called at stop after every emitted event was acknowledged: commit positions here."""

    async def close(self) -> None:
        """Release what the source holds; called last."""


class Trigger(abc.ABC):
    """Decides when a :class:`TriggerSource` runs a cycle."""

    @abc.abstractmethod
    async def wait(self) -> None:
        """Return when the next cycle should start; awaited by the source before each cycle."""


class PeriodicTrigger(Trigger):
    """Fires every ``interval`` seconds, the first time immediately."""

    def __init__(self, interval: float) -> None:
        if interval <= 0:
            raise ValueError(f"PeriodicTrigger interval must be positive, got {interval!r}")
        self.interval = interval
        self._first = True

    async def wait(self) -> None:
        if self._first:
            self._first = False
            return
        await asyncio.sleep(self.interval)


class ManualTrigger(Trigger):
    """Fires when :meth:`fire` is called (from a web handler, another pipeline, a test)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        """Start one cycle."""
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        self._event.clear()


class TriggerSource(Source):
    """A source that runs :meth:`cycle` each time its trigger fires (polling an API, a table, a folder).

    ``interval`` (seconds) in its configuration installs a :class:`PeriodicTrigger`; pass ``trigger=``
    for another kind. ``cycles`` (0 = for ever) ends the source after that many cycles.
    """

    _bspump_base: ClassVar[bool] = True
    ConfigDefaults: ClassVar[dict[str, Any]] = {"interval": Seconds(0.0, min=0.0), "cycles": Int(0, min=0)}

    def __init__(
        self,
        app: BSPumpApplication,
        pipeline: Pipeline,
        id: str | None = None,
        config: Mapping[str, Any] | None = None,
        connection: str | None = None,
        trigger: Trigger | None = None,
    ) -> None:
        super().__init__(app, pipeline, id=id, config=config, connection=connection)
        interval = self.Config.getfloat("interval")
        if trigger is None:
            trigger = PeriodicTrigger(interval) if interval > 0 else ManualTrigger()
        self.trigger = trigger
        self.cycle_count = 0

    async def main(self) -> None:
        limit = self.Config.getint("cycles")
        while not limit or self.cycle_count < limit:
            await self.trigger.wait()
            await self.pipeline.wait_ready()
            await self.cycle()
            self.cycle_count += 1

    @abc.abstractmethod
    async def cycle(self) -> None:
        """Read once and :meth:`emit` what was found; called each time the trigger fires, once the pipeline
        is ready."""
