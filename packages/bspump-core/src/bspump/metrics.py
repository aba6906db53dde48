"""Counters kept by pipelines and their components, cheap enough for the hot path."""

from __future__ import annotations

import time
from collections import deque


class Counters:
    """Event counts of one pipeline or component.

    Updated once per batch, never per event; ``events_per_second`` is computed from samples taken at
    most once a second, when batches arrive, so an idle pipeline costs nothing.
    """

    __slots__ = ("_last_sample", "_samples", "dropped", "errors", "events_in", "events_out", "started")

    SAMPLE_INTERVAL = 1.0
    WINDOW = 10

    def __init__(self) -> None:
        self.events_in = 0
        self.events_out = 0
        self.dropped = 0
        self.errors = 0
        self.started = time.monotonic()
        self._samples: deque[tuple[float, int]] = deque([(self.started, 0)], maxlen=self.WINDOW + 1)
        self._last_sample = self.started

    def sample(self, now: float) -> None:
        """Record ``events_in`` for the rate; the pipeline calls this per batch."""
        if now - self._last_sample >= self.SAMPLE_INTERVAL:
            self._last_sample = now
            self._samples.append((now, self.events_in))

    def events_per_second(self) -> float:
        """Input rate over the last ~10 seconds."""
        now = time.monotonic()
        first_time, first_count = self._samples[0]
        elapsed = now - first_time
        if elapsed <= 0:
            return 0.0
        return (self.events_in - first_count) / elapsed

    def snapshot(self) -> dict[str, float]:
        """The counters as a plain dict."""
        return {
            "in": self.events_in,
            "out": self.events_out,
            "dropped": self.dropped,
            "errors": self.errors,
            "eps": round(self.events_per_second(), 1),
        }
