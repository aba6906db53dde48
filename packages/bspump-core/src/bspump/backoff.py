"""Capped exponential backoff with jitter, shared by reconnects and retries."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays ``initial * multiplier**n`` capped at ``maximum``, each spread by +/- ``jitter`` (a fraction).

    Jitter keeps many clients that lost the same server from reconnecting in lockstep.
    """

    initial: float = 0.5
    maximum: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.2
    attempt: int = 0
    _random: random.Random = field(default_factory=random.Random, repr=False)

    def next_delay(self) -> float:
        """Return the delay before the next attempt and count the attempt."""
        try:
            base = min(self.maximum, self.initial * (self.multiplier**self.attempt))
        except OverflowError:  # thousands of attempts into a long outage: long since at the cap
            base = self.maximum
        self.attempt += 1
        if self.jitter <= 0:
            return base
        spread = base * self.jitter
        return max(0.0, min(self.maximum, base + self._random.uniform(-spread, spread)))

    def reset(self) -> None:
        """Start again from the initial delay (after a success)."""
        self.attempt = 0
