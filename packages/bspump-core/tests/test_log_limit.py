"""Rate limits for client libraries' log records: one line per distinct message per interval, with a count."""

from __future__ import annotations

import logging
import uuid

import pytest

from bspump.log_limit import RateLimitFilter, limit_logger_rate


def record(msg: str, *args: object, created: float, name: str = "lib.conn", level: int = logging.ERROR
           ) -> logging.LogRecord:
    rec = logging.LogRecord(name, level, __file__, 1, msg, args, None)
    rec.created = created
    return rec


def test_one_line_per_message_per_interval_with_the_count_of_the_rest() -> None:
    limiter = RateLimitFilter(10.0)
    template = "Unable connect to node with id %s: %s"
    passed = [r for r in (record(template, 1, f"refused #{i}", created=i * 0.001) for i in range(5000))
              if limiter.filter(r)]
    assert len(passed) == 1
    later = record(template, 1, "refused again", created=12.0)
    assert limiter.filter(later)
    assert later.getMessage() == ("Unable connect to node with id 1: refused again "
                                  "(4999 similar lines held back over 12 s)")
    assert limiter.held_back == 4999
    assert not limiter.filter(record(template, 1, "x", created=13.0))


def test_distinct_messages_levels_and_loggers_are_limited_apart() -> None:
    limiter = RateLimitFilter(10.0)
    assert limiter.filter(record("a %s", 1, created=0.0))
    assert limiter.filter(record("b %s", 1, created=0.0))
    assert limiter.filter(record("a %s", 1, created=0.0, level=logging.WARNING))
    assert limiter.filter(record("a %s", 1, created=0.0, name="lib.other"))
    assert not limiter.filter(record("a %s", 2, created=1.0))


def test_a_percent_sign_in_the_message_survives_the_count() -> None:
    limiter = RateLimitFilter(1.0)
    limiter.filter(record("100%% busy: %s", "x", created=0.0))
    limiter.filter(record("100%% busy: %s", "y", created=0.5))
    rec = record("100%% busy: %s", "z", created=2.0)
    assert limiter.filter(rec)
    assert rec.getMessage() == "100% busy: z (1 similar lines held back over 2 s)"


def test_interval_zero_lets_everything_through() -> None:
    limiter = RateLimitFilter(0.0)
    assert all(limiter.filter(record("same", created=0.0)) for _ in range(100))


def test_limit_logger_rate_covers_the_existing_children_once(caplog: pytest.LogCaptureFixture) -> None:
    root = f"lib{uuid.uuid4().hex[:8]}"
    child = logging.getLogger(f"{root}.producer.sender")
    other = logging.getLogger(f"{root}x")  # shares the prefix, not the package
    limiter = limit_logger_rate(root, 30.0)
    assert limit_logger_rate(root, 5.0) is limiter
    assert limiter.interval == 5.0
    assert child.filters == [limiter]
    assert logging.getLogger(root).filters == [limiter]
    assert other.filters == []
    with caplog.at_level(logging.WARNING):
        for i in range(1000):
            child.error("Got error produce response: %s", i)
    assert [r.getMessage() for r in caplog.records] == ["Got error produce response: 0"]
    child.removeFilter(limiter)
    logging.getLogger(root).removeFilter(limiter)


def test_records_of_a_template_without_words_are_told_apart_by_their_text() -> None:
    """librdkafka's lines all share the template "%s [%s] %s": its text tells them apart, numbers aside."""
    limiter = RateLimitFilter(10.0)
    template = "%s [%s] %s"
    refused = "127.0.0.1:9092/1: Connect to ipv4#127.0.0.1:9092 failed: Connection refused (after %d ms)"
    assert limiter.filter(record(template, "rdkafka#producer-1", "FAIL", refused % 0, created=0.0))
    assert not limiter.filter(record(template, "rdkafka#producer-1", "FAIL", refused % 12, created=1.0))
    assert limiter.filter(record(template, "rdkafka#producer-1", "REQTMOUT", "Timed out 1 requests", created=1.0))
    assert limiter.filter(record(template, "rdkafka#consumer-2", "FAIL", "Disconnected", created=1.0))
