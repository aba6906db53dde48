"""Splitting bytes into bounded lines and decoding them (the core of FileSource and StdinSource)."""

from __future__ import annotations

import pytest

from bspump.embedded.lines import (
    LONG_LINE_PREFIX,
    LineDecoder,
    LineSplitter,
    LineTooLongError,
    LongLine,
    SkippedRest,
)


def split_all(data: bytes, chunk: int, limit: int = 1 << 20) -> list[object]:
    splitter = LineSplitter(limit)
    out: list[object] = []
    for start in range(0, len(data), chunk):
        out.extend(splitter.feed(data[start:start + chunk]))
    out.extend(splitter.finish())
    return out


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 10_000])
def test_lines_are_the_same_whatever_the_chunk_boundaries(chunk: int) -> None:
    data = b"alpha\r\n\nbeta\ngamma delta\n\xff\xfe\nlast without newline"
    assert split_all(data, chunk) == [b"alpha\r", b"", b"beta", b"gamma delta", b"\xff\xfe",
                                      b"last without newline"]


def test_a_line_over_the_limit_becomes_a_long_line_with_its_prefix_and_length() -> None:
    long = b"x" * 5000
    for chunk in (1000, 4096, 100_000):
        items = split_all(b"short\n" + long + b"\nafter\n", chunk, limit=2048)
        assert items[0] == b"short" and items[2] == b"after"
        marker = items[1]
        assert isinstance(marker, LongLine)
        assert (marker.length, marker.ended, marker.consumed) == (5000, True, 5001)
        assert marker.prefix == long[:LONG_LINE_PREFIX]


def test_an_endless_line_is_reported_at_the_measuring_limit_with_bounded_memory() -> None:
    limit = 1024
    splitter = LineSplitter(limit)
    zeros = b"\0" * 4096
    reports = []
    for _ in range(100):  # 400 KiB, beyond 64 x the limit
        reports.extend(splitter.feed(zeros))
        assert len(splitter._pending) == 0 and len(splitter._long_prefix or b"") <= LONG_LINE_PREFIX
    assert len(reports) == 1
    report = reports[0]
    assert isinstance(report, LongLine) and not report.ended and report.consumed == 0
    assert report.length > 64 * limit
    # when the line ends at last, its rest moves the position past the whole line and its newline
    rest = splitter.feed(b"\0\0\nnext\n")
    assert isinstance(rest[0], SkippedRest) and rest[0].consumed == 100 * 4096 + 2 + 1
    assert rest[1:] == [b"next"]
    assert f"has no newline in its first {report.length:,} bytes" in str(LineTooLongError(report, limit))


def test_the_unterminated_last_line_comes_from_finish() -> None:
    splitter = LineSplitter(100)
    assert splitter.feed(b"one\ntw") == [b"one"]
    assert splitter.finish() == [b"tw"]
    assert splitter.finish() == []


def test_text_decoding_strips_carriage_returns_and_skips_empty_lines() -> None:
    assert LineDecoder("text", "utf-8", True, 100).decode([b"a\r", b"", b"b"]) == (["a", "b"], [])
    assert LineDecoder("text", "utf-8", False, 100).decode([b"a", b""]) == (["a", ""], [])
    assert LineDecoder("text", "latin-1", False, 100).decode([b"caf\xe9"]) == (["café"], [])


def test_a_line_that_does_not_decode_is_reported_with_its_bytes_and_the_rest_still_decode() -> None:
    events, failures = LineDecoder("text", "utf-8", True, 100).decode([b"good", b"bad \xff", b"fine"])
    assert events == ["good", "fine"]
    [(index, raw, error)] = failures
    assert (index, raw) == (1, b"bad \xff") and isinstance(error, UnicodeDecodeError)
    events, failures = LineDecoder("json", "utf-8", True, 100).decode([b'{"i":1}', b'{"i":"\xff"}', b"{oops"])
    assert events == [{"i": 1}]
    assert [(f[0], f[1], type(f[2]).__name__) for f in failures] == [
        (1, b'{"i":"\xff"}', "UnicodeDecodeError"),  # the encoding is at fault: the raw bytes travel on
        (2, "{oops", "JSONDecodeError"),  # valid text, invalid JSON: the text travels on
    ]


def test_decode_items_numbers_and_locates_rejected_lines() -> None:
    decoder = LineDecoder("json", "utf-8", True, 16)
    splitter = LineSplitter(16)
    items = splitter.feed(b'{"a":1}\n' + b"y" * 40 + b'\n{bad\n{"b":2}\n')
    decoded = decoder.decode_items(items, offset=100, count=10, marked=splitter.marked)
    assert decoded.events == [{"a": 1}, {"b": 2}]
    assert (decoded.offset, decoded.count) == (100 + 8 + 41 + 5 + 8, 14)
    assert [(number, at, type(error).__name__) for number, at, _, error in decoded.rejects] == [
        (13, 149, "JSONDecodeError"), (12, 108, "LineTooLongError")]
    assert "line is 40 bytes long, over max_line_bytes = 16" in str(decoded.rejects[1][3])
