"""Processors transform events synchronously, a batch at a time, inside the pipeline's hot path."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from .batch import Context
from .component import Component


class Processor(Component):
    """Transforms one event: return it, a new event, or ``None`` to drop it.

    The pipeline calls :meth:`process` for every event of a batch in a tight loop, so keep it
    synchronous and free of I/O; use a :class:`~bspump.Lookup` for reference data. An exception is
    handled by the pipeline's error policy for that one event.
    """

    _bspump_base: ClassVar[bool] = True

    def process(self, context: Context, event: Any) -> Any:
        """Return the (possibly new) event, or ``None`` to drop it."""
        return event


class Generator(Processor):
    """Turns one event into any number of events (zero drops it)."""

    _bspump_base: ClassVar[bool] = True

    def generate(self, context: Context, event: Any) -> Iterable[Any]:
        """Yield or return the events that replace ``event``."""
        yield event
