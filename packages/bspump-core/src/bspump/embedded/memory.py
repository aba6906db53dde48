"""In-memory sources and sinks: tests, notebooks, benchmarks."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from ..batch import Batch, Context
from ..sink import Sink
from ..source import Source


class MemorySource(Source):
    """Emits ``events`` (a constructor argument) in batches of ``batch_size``, then ends.

    ``repeat`` emits the list that many times (useful for load tests).
    """

    ConfigDefaults: ClassVar[dict[str, Any]] = {"batch_size": 1000, "repeat": 1}

    def __init__(self, *args: Any, events: Iterable[Any] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events = list(events)
        self.batch_size = self.Config.getint("batch_size")
        if self.batch_size < 1:
            raise self.Config.error("batch_size", "must be at least 1")

    async def main(self) -> None:
        size = self.batch_size
        context: Context = {"source": "memory"}
        for _ in range(self.Config.getint("repeat")):
            for start in range(0, len(self.events), size):
                await self.emit(self.events[start:start + size], context)


class MemorySink(Sink):
    """Keeps every event (and its context) in ``events`` / ``contexts``; acknowledges at once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events: list[Any] = []
        self.contexts: list[Context] = []

    def put(self, batch: Batch) -> None:
        self.events.extend(batch.events)
        if batch.contexts is None:
            self.contexts.extend([batch.context] * len(batch.events))
        else:
            self.contexts.extend(batch.contexts)
        batch.ack(len(batch.events))


class NullSink(Sink):
    """Discards events, counting them in ``count``; acknowledges at once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.count = 0

    def put(self, batch: Batch) -> None:
        n = len(batch.events)
        self.count += n
        batch.ack(n)
