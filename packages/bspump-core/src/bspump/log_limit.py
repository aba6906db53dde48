"""Rate limits for the log records of client libraries, which may log every failed retry while a server is down.

A connector calls :func:`limit_logger_rate` for its client library's logger when its connection is created:
each distinct message (logger, level and message template) then passes at most once per ``interval`` seconds,
and the line that passes after a quiet spell says how many of its kind were held back.
"""

from __future__ import annotations

import logging
import re

__all__ = ["RateLimitFilter", "limit_logger_rate"]


class RateLimitFilter(logging.Filter):
    """Lets each distinct message through at most once per ``interval`` seconds, with a count of the others.

    Messages are told apart by logger, level and message template (``record.msg`` before its arguments are
    filled in), so that "cannot connect to node %s: %s" printed ten thousand times with changing details
    counts as one. A template that is nothing but placeholders (librdkafka's ``"%s [%s] %s"``) says nothing,
    so such records are told apart by their text instead, with runs of digits counting as equal (ports,
    ids and milliseconds change from line to line). The first record of a kind passes; the others are
    dropped until ``interval`` seconds passed since the last one that passed; that next one passes with
    ``(N similar lines held back over S s)`` appended (held-back lines are counted on the next line of their
    kind: a filter has no clock of its own). ``interval = 0`` lets everything through.
    """

    def __init__(self, interval: float) -> None:
        super().__init__()
        self.interval = interval
        # (logger, level, template) -> [time the last one passed, how many were held back since]
        self._seen: dict[tuple[str, int, str], list[float]] = {}
        #: Records held back so far, over all messages.
        self.held_back = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if self.interval <= 0:
            return True
        template = str(record.msg)
        if record.args and not _WORDS.search(_PLACEHOLDERS.sub("", template)):
            template = _DIGITS.sub("#", record.getMessage())
        key = (record.name, record.levelno, template)
        seen = self._seen.get(key)
        now = record.created
        if seen is None:
            if len(self._seen) > 10_000:  # messages with ever-changing templates must not grow this for ever
                self._seen.clear()
            self._seen[key] = [now, 0]
            return True
        last, held = seen
        if now - last < self.interval:
            seen[1] = held + 1
            self.held_back += 1
            return False
        seen[0] = now
        seen[1] = 0
        if held:
            # Appended to the template, not formatted into it: no "%" may enter, arguments stay as they are.
            record.msg = f"{record.msg} ({int(held)} similar lines held back over {now - last:.0f} s)"
        return True


_PLACEHOLDERS = re.compile(r"%(\([^)]*\))?[-#0 +]*[\d*]*(\.[\d*]+)?[a-zA-Z%]")
_WORDS = re.compile(r"[a-zA-Z]{2,}")
_DIGITS = re.compile(r"\d+")


def limit_logger_rate(name: str, interval: float) -> RateLimitFilter:
    """Rate-limit the records of logger ``name`` and of every logger below it that exists now (a library's
    modules create theirs on import, so import the library first). Idempotent: a logger keeps the filter it
    got first, whose ``interval`` is updated; returns that filter.

    A filter on a logger applies only to the records created on that very logger (not to those its children
    pass up), hence one filter shared by every logger of the library.
    """
    names = [name, *(n for n in list(logging.Logger.manager.loggerDict) if n.startswith(name + "."))]
    loggers = [logging.getLogger(n) for n in names]
    existing = next((f for lg in loggers for f in lg.filters if isinstance(f, RateLimitFilter)), None)
    limiter = existing or RateLimitFilter(interval)
    limiter.interval = interval
    for logger in loggers:
        if limiter not in logger.filters:
            logger.addFilter(limiter)
    return limiter
