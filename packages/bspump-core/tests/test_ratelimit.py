"""RateLimitedLog: one line per kind per interval, and the count of the lines held back."""

from __future__ import annotations

import logging

import pytest

from bspump.ratelimit import RateLimitedLog


class Clock:
    """Time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_kind_per_interval_with_the_count_held_back(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="test.ratelimit")
    clock = Clock()
    limited = RateLimitedLog(logging.getLogger("test.ratelimit"), interval=10.0, clock=clock)
    assert limited.warning("bad", "bad request from %s", "a") is True
    for peer in "bcd":
        clock.now += 1
        assert limited.warning("bad", "bad request from %s", peer) is False
    assert limited.error("other", "other trouble") is True  # kinds are limited separately
    clock.now += 7  # 10 s after the first line
    assert limited.warning("bad", "bad request from %s", "e") is True
    limited.warning("bad", "bad request from %s", "f")
    limited.warning("bad", "bad request from %s", "g")
    limited.flush()
    limited.flush()  # nothing held back any more: nothing written
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "bad request from a"),
        ("ERROR", "other trouble"),
        ("WARNING", "bad request from e (3 more like this in the last 10.0 s)"),
        ("WARNING", "bad request from g (2 more like this in the last 0.0 s)"),
    ]


def test_lines_below_the_logger_level_are_neither_written_nor_counted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="test.ratelimit.quiet")
    limited = RateLimitedLog(logging.getLogger("test.ratelimit.quiet"), interval=10.0, clock=Clock())
    assert limited.warning("bad", "bad request") is False
    assert limited.warning("bad", "bad request") is False
    limited.flush()
    assert caplog.records == []
