"""Log lines that cannot flood: at most one line per kind of event per interval (client retry loops,
failing hooks, abusive web clients)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RateLimitedLog"]


@dataclass
class _Held:
    """The lines of one kind that were not written since the last one that was."""

    last_written: float
    count: int = 0
    level: int = logging.WARNING
    message: str = ""
    args: tuple[Any, ...] = field(default_factory=tuple)


class RateLimitedLog:
    """Writes at most one line per ``kind`` every ``interval`` seconds to ``logger``.

    A line that comes too soon after the last one of its kind is held back and counted; the next line
    of that kind that goes out says how many were held back, and :meth:`flush` writes the last one held
    back of each kind (with its count) so that a flood that stopped is still reported.
    """

    def __init__(self, logger: logging.Logger, interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._kinds: dict[str, _Held] = {}

    def warning(self, kind: str, message: str, *args: Any) -> bool:
        """A rate-limited WARNING line; ``message`` and ``args`` as for :meth:`logging.Logger.warning`."""
        return self.log(logging.WARNING, kind, message, *args)

    def error(self, kind: str, message: str, *args: Any) -> bool:
        """A rate-limited ERROR line (without a traceback: a flood would carry one each)."""
        return self.log(logging.ERROR, kind, message, *args)

    def log(self, level: int, kind: str, message: str, *args: Any) -> bool:
        """Write the line unless one of the same ``kind`` was written less than ``interval`` ago;
        True when it was written."""
        if not self.logger.isEnabledFor(level):
            return False
        now = self.clock()
        held = self._kinds.get(kind)
        if held is not None and now - held.last_written < self.interval:
            held.count += 1
            held.level, held.message, held.args = level, message, args
            return False
        self._write(level, message, args, held, now)
        self._kinds[kind] = _Held(last_written=now)
        return True

    def flush(self) -> None:
        """Write the last held-back line of every kind with its count (the endpoint calls this at stop)."""
        now = self.clock()
        for held in self._kinds.values():
            if held.count:
                self._write(held.level, held.message, held.args, held, now)
                held.count = 0
                held.last_written = now

    def _write(self, level: int, message: str, args: tuple[Any, ...], held: _Held | None, now: float) -> None:
        if held is not None and held.count:
            message += " (%d more like this in the last %.1f s)"
            args = (*args, held.count, now - held.last_written)
        self.logger.log(level, message, *args)
