"""Lines of a byte stream: split at newlines with bounded memory, then decoded into events.

:class:`LineSplitter` cuts what a reader returns into lines without ever holding more than
``max_line_bytes`` of an unfinished line; a longer line becomes a :class:`LongLine` (its first bytes and its
length). :class:`LineDecoder` turns lines into events per ``format`` and ``encoding``, and reports the lines
that do not decode instead of raising, so that one bad line meets the pipeline's error policy and the rest
flow on.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Final, cast

import orjson

from ..config import Int

#: The line readers' numeric keys, with their ranges: events per batch, and the longest line (1 MiB).
BATCH_SIZE: Final = Int(1000, min=1, max=1_000_000)
MAX_LINE_BYTES: Final = Int(1 << 20, min=64, max=1 << 30)
#: Bytes of an over-long line that its error event keeps.
LONG_LINE_PREFIX: Final = 1024
#: An over-long line is measured up to this many times ``max_line_bytes``; a line that goes on beyond is
#: reported then (``/dev/zero`` has no end), and its rest is skipped.
MEASURE_FACTOR: Final = 64


class LineTooLongError(ValueError):
    """A line longer than ``max_line_bytes``; the event that carries it holds its first bytes only."""

    def __init__(self, line: LongLine, limit: int) -> None:
        kept = len(line.prefix)
        if line.ended:
            size = f"is {line.length:,} bytes long, over max_line_bytes = {limit}"
        else:
            size = (f"has no newline in its first {line.length:,} bytes, over max_line_bytes = {limit} "
                    "(its rest is skipped)")
        super().__init__(f"line {size}; the event holds its first {kept:,} bytes")
        self.length = line.length


class LongLine:
    """A line over the limit: ``prefix`` (its first :data:`LONG_LINE_PREFIX` bytes) and ``length`` (bytes
    before its newline; a lower bound when ``ended`` is false because it went on past the measuring limit).
    ``consumed`` is how far it moves the reading position: its bytes and newline once ended, else 0 (the
    rest follows as :class:`SkippedRest`)."""

    __slots__ = ("consumed", "ended", "length", "prefix")

    def __init__(self, prefix: bytes, length: int, ended: bool, consumed: int) -> None:
        self.prefix = prefix
        self.length = length
        self.ended = ended
        self.consumed = consumed


class SkippedRest:
    """The rest of a :class:`LongLine` that was reported before it ended: no event, only ``consumed`` bytes."""

    __slots__ = ("consumed",)

    def __init__(self, consumed: int) -> None:
        self.consumed = consumed


#: What the splitter yields: a complete line (bytes, without its newline), or a marker.
Item = bytes | LongLine | SkippedRest


class LineSplitter:
    """Splits a stream of byte chunks into lines of at most ``max_line_bytes`` bytes.

    :meth:`feed` returns the lines a chunk completes, :meth:`finish` the unterminated rest at the end of
    input. A line (bytes) moves the reading position by its length plus one (the newline); markers say how
    far in ``consumed``. Memory stays within about ``max_line_bytes`` plus the chunk, whatever the input.
    """

    def __init__(self, max_line_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
        self.measure_limit = max_line_bytes * MEASURE_FACTOR
        self._pending = b""
        # An over-long line being skipped: its prefix, bytes seen so far, and whether it was reported.
        self._long_prefix: bytes | None = None
        self._long_length = 0
        self._long_reported = False
        #: True if the last :meth:`feed` returned a marker (callers then cannot count positions by length).
        self.marked = False

    def feed(self, chunk: bytes) -> list[Item]:
        """The lines that ``chunk`` completes, in order."""
        out: list[Item] = []
        self.marked = False
        start = 0
        if self._long_prefix is not None:
            newline = chunk.find(b"\n")
            if newline < 0:
                self._grow_long(len(chunk), out)
                return out
            self._end_long(newline, out)
            start = newline + 1
        elif self._pending:
            newline = chunk.find(b"\n")
            if newline < 0:
                self._keep(self._pending + chunk, out)
                return out
            line = self._pending + chunk[:newline]
            self._pending = b""
            out.append(self._bounded(line))
            start = newline + 1
        last = chunk.rfind(b"\n", start)
        if last >= 0:
            lines = chunk[start:last].split(b"\n")
            if max(map(len, lines)) > self.max_line_bytes:
                out.extend(self._bounded(line) for line in lines)
            else:
                out.extend(lines)
            start = last + 1
        if start < len(chunk):
            self._keep(chunk[start:], out)
        return out

    def finish(self) -> list[Item]:
        """The unterminated last line at the end of input, if any (its ``consumed`` has no newline)."""
        out: list[Item] = []
        self.marked = False
        if self._long_prefix is not None:
            self.marked = True
            if self._long_reported:
                out.append(SkippedRest(self._long_length))
            else:
                out.append(LongLine(self._long_prefix, self._long_length, True, self._long_length))
            self._long_prefix = None
        elif self._pending:
            out.append(self._pending)
            self._pending = b""
        return out

    def _bounded(self, line: bytes) -> Item:
        if len(line) <= self.max_line_bytes:
            return line
        self.marked = True
        return LongLine(line[:LONG_LINE_PREFIX], len(line), True, len(line) + 1)

    def _keep(self, rest: bytes, out: list[Item]) -> None:
        """Hold the start of an unfinished line, or begin skipping it if it is already too long."""
        if len(rest) <= self.max_line_bytes:
            self._pending = rest
            return
        self._pending = b""
        self._long_prefix = rest[:LONG_LINE_PREFIX]
        self._long_length = 0
        self._long_reported = False
        self._grow_long(len(rest), out)

    def _grow_long(self, size: int, out: list[Item]) -> None:
        self._long_length += size
        if not self._long_reported and self._long_length > self.measure_limit:
            assert self._long_prefix is not None
            self._long_reported = True
            self.marked = True
            out.append(LongLine(self._long_prefix, self._long_length, False, 0))

    def _end_long(self, size: int, out: list[Item]) -> None:
        length = self._long_length + size
        assert self._long_prefix is not None
        self.marked = True
        if self._long_reported:
            out.append(SkippedRest(length + 1))
        else:
            out.append(LongLine(self._long_prefix, length, True, length + 1))
        self._long_prefix = None


@dataclass
class DecodedLines:
    """What a batch of lines came to: ``events``, and ``rejects`` as ``(line number, offset of the line's
    first byte, raw line, error)``; ``offset`` and ``count`` are the byte offset and the number of complete
    lines after the batch."""

    events: list[Any]
    offset: int
    count: int
    rejects: list[tuple[int, int, Any, Exception]] = field(default_factory=list)


class LineDecoder:
    """Turns lines (bytes without newline) into events: ``text`` gives strings, ``json`` one value per line.

    A trailing carriage return is dropped (CRLF files). With ``skip_empty`` empty lines give no event.
    ``max_line_bytes`` is the limit the splitter applied, quoted in the errors of over-long lines.
    """

    def __init__(self, fmt: str, encoding: str, skip_empty: bool, max_line_bytes: int) -> None:
        self.format = fmt
        self.encoding = encoding
        self.skip_empty = skip_empty
        self.max_line_bytes = max_line_bytes
        self._utf8 = encoding == "utf-8"

    def decode_items(self, items: list[Item], offset: int, count: int, marked: bool) -> DecodedLines:
        """Decode what :meth:`LineSplitter.feed` returned (``marked`` as it said), the first item starting at
        byte ``offset`` after ``count`` complete lines."""
        if marked:
            lines, origins, long_lines, end, end_count = _sort_out(items, offset, count)
        else:
            lines = cast(list[bytes], items)  # the splitter marked nothing: only lines
            origins, long_lines = None, []
            end = offset + sum(map(len, lines)) + len(lines)
            end_count = count + len(lines)
        events, failures = self.decode(lines)
        result = DecodedLines(events, end, end_count)
        if failures:
            if origins is None:
                origins = _origins(lines, offset, count)
            for index, raw, error in failures:
                number, at = origins[index]
                result.rejects.append((number, at, raw, error))
        for number, at, long_line in long_lines:
            result.rejects.append((number, at, long_line.prefix, LineTooLongError(long_line, self.max_line_bytes)))
        return result

    def decode(self, lines: list[bytes]) -> tuple[list[Any], list[tuple[int, Any, Exception]]]:
        """The events of ``lines``, and ``(index, raw, error)`` for each line that did not decode: ``raw`` is
        the line as text if it decoded as text, else its bytes."""
        if not lines:
            return [], []
        if self.format == "json":
            return self._json(lines)
        return self._text(lines)

    def _text(self, lines: list[bytes]) -> tuple[list[Any], list[tuple[int, Any, Exception]]]:
        try:  # one decode for the whole batch: a newline is the byte 0x0A in every encoding accepted
            joined = b"\n".join(lines).decode(self.encoding)
        except UnicodeDecodeError:
            return self._text_each(lines)
        texts = joined.split("\n")
        if "\r" in joined:
            texts = [text.rstrip("\r") for text in texts]
        if self.skip_empty:
            texts = [text for text in texts if text]
        return texts, []

    def _text_each(self, lines: list[bytes]) -> tuple[list[Any], list[tuple[int, Any, Exception]]]:
        events: list[Any] = []
        failures: list[tuple[int, Any, Exception]] = []
        for index, line in enumerate(lines):
            try:
                text = line.decode(self.encoding).rstrip("\r")
            except UnicodeDecodeError as exc:
                failures.append((index, line.rstrip(b"\r"), exc))
                continue
            if text or not self.skip_empty:
                events.append(text)
        return events, failures

    def _json(self, lines: list[bytes]) -> tuple[list[Any], list[tuple[int, Any, Exception]]]:
        events: list[Any] = []
        failures: list[tuple[int, Any, Exception]] = []
        append = events.append
        loads = orjson.loads
        skip_empty = self.skip_empty
        utf8 = self._utf8
        for index, line in enumerate(lines):
            if skip_empty and (not line or line == b"\r"):
                continue
            try:
                append(loads(line if utf8 else line.decode(self.encoding)))
            except (orjson.JSONDecodeError, UnicodeDecodeError) as exc:
                failures.append(self._json_failure(index, line, exc))
        return events, failures

    def _json_failure(self, index: int, line: bytes, error: Exception) -> tuple[int, Any, Exception]:
        raw = line.rstrip(b"\r")
        try:
            text = raw.decode(self.encoding)
        except UnicodeDecodeError as exc:
            return index, raw, exc  # the encoding is at fault, not the JSON
        return index, text, error


def _sort_out(
    items: list[Item], offset: int, count: int
) -> tuple[list[bytes], list[tuple[int, int]], list[tuple[int, int, LongLine]], int, int]:
    """Separate lines from over-long ones; returns the lines, each one's (number, offset), the over-long
    lines with theirs, and the offset and count of complete lines after ``items``."""
    lines: list[bytes] = []
    origins: list[tuple[int, int]] = []
    long_lines: list[tuple[int, int, LongLine]] = []
    at = offset
    for item in items:
        if isinstance(item, bytes):
            count += 1
            lines.append(item)
            origins.append((count, at))
            at += len(item) + 1
        elif isinstance(item, LongLine):
            long_lines.append((count + 1, at, item))
            if item.ended:
                count += 1
                at += item.consumed
        else:  # the end of a line that was reported before it ended
            count += 1
            at += item.consumed
    return lines, origins, long_lines, at, count


def _origins(lines: list[bytes], offset: int, count: int) -> list[tuple[int, int]]:
    """Each line's (number, offset of its first byte), for lines that follow one another from ``offset``."""
    starts = itertools.accumulate((len(line) + 1 for line in lines), initial=offset)
    return list(zip(range(count + 1, count + len(lines) + 1), starts, strict=False))
