"""The unit that flows from a pipeline's processors into its sink."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .delivery import Delivery

if TYPE_CHECKING:
    from .metrics import Counters

Context = dict[str, Any]


class Batch:
    """Events handed to a sink together, with their context(s) and the delivery to acknowledge.

    ``contexts`` is ``None`` when every event shares ``context`` (the fast, common case); otherwise it
    holds one context per event, parallel to ``events``: a list, or :class:`~bspump.LazyContexts` that
    builds each context when it is first read (index or iterate it; ``column(key)`` reads one key of all,
    cheaply). A sink calls :meth:`ack` for the events it durably
    wrote; ``counters`` are those of the sink the pipeline handed the batch to (they count what it wrote).
    """

    __slots__ = ("context", "contexts", "counters", "delivery", "events")

    def __init__(
        self,
        events: list[Any],
        delivery: Delivery,
        context: Context | None = None,
        contexts: Sequence[Context] | None = None,
        counters: Counters | None = None,
    ) -> None:
        self.events = events
        self.delivery = delivery
        self.context: Context = context if context is not None else {}
        self.contexts = contexts
        self.counters = counters

    def ack(self, count: int) -> None:
        """Acknowledge ``count`` events of this batch as durably written: what a sink calls once its
        external system confirmed them. They count as the sink's (and the pipeline's) output."""
        counters = self.counters
        if counters is not None:
            counters.events_out += count
        self.delivery.ack(count)

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self) -> Iterator[tuple[Context, Any]]:
        """Iterate ``(context, event)`` pairs."""
        if self.contexts is None:
            context = self.context
            return ((context, event) for event in self.events)
        return zip(self.contexts, self.events, strict=True)

    def context_of(self, index: int) -> Context:
        """The context of the event at ``index``."""
        return self.context if self.contexts is None else self.contexts[index]

    def subset(self, indexes: list[int]) -> Batch:
        """A batch of the events at ``indexes`` sharing this batch's delivery (for retrying some items)."""
        events = [self.events[i] for i in indexes]
        contexts = None if self.contexts is None else [self.contexts[i] for i in indexes]
        return Batch(events, self.delivery, self.context, contexts, self.counters)

    def __repr__(self) -> str:
        return f"<Batch {len(self.events)} events {self.delivery!r}>"
