"""Processors transform events synchronously, a batch at a time, inside the pipeline's hot path."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from .batch import Context
from .component import Component


class Processor(Component):
    """Transforms one event: return it, a new event, or ``None`` to drop it.

    The pipeline calls :meth:`process` for every event of a batch in a tight loop, so keep it
    synchronous and free of I/O; use a :class:`~bspump.Lookup` for reference data. An exception is
    handled by the pipeline's error policy for that one event.

    I/O that a batch needs (querying an on-demand :class:`~bspump.CachedLookup` for the keys of the
    batch) goes into :meth:`prepare`, which the pipeline awaits before this processor sees the batch.
    """

    _bspump_base: ClassVar[bool] = True

    async def prepare(self, events: Sequence[Any]) -> None:
        """Fetch what :meth:`process` will need for ``events`` (e.g. ``await lookup.prefetch(keys)``).

        Called by the pipeline once per batch, with the events as they reach this processor, and only
        if a subclass overrides it (the others cost nothing). If it raises, the failure is logged (at
        most once every 10 s) and :meth:`process` still runs for each event, so that what is missing
        meets the pipeline's error policy event by event instead of losing the batch.
        """

    def process(self, context: Context, event: Any) -> Any:
        """Return the (possibly new) event, or ``None`` to drop it."""
        return event


class Generator(Processor):
    """Turns one event into any number of events (zero drops it)."""

    _bspump_base: ClassVar[bool] = True

    def generate(self, context: Context, event: Any) -> Iterable[Any]:
        """Yield or return the events that replace ``event``."""
        yield event
