"""Newline-delimited files: one event per line, text or JSON."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Sequence
from typing import IO, Any, ClassVar

from ..async_sink import AsyncSink
from ..batch import Batch
from ..failures import ItemFailure
from ..source import Source
from .codec import FORMATS, decode_line, encode_line


def _check_format(component: Any) -> str:
    fmt = str(component.Config.get("format")).lower()
    if fmt not in FORMATS:
        raise component.Config.error("format", f"expected one of {', '.join(FORMATS)}, got {fmt!r}")
    return fmt


class FileSource(Source):
    """Reads ``path`` line by line (``format = text`` gives strings, ``json`` one object per line).

    Lines that are not valid JSON go to the pipeline's error policy with ``path`` and ``line`` in their
    context. Ends at the end of the file. File reads run in a worker thread.
    """

    ConfigDefaults: ClassVar[dict[str, Any]] = {
        "path": "",
        "format": "json",
        "batch_size": 1000,
        "encoding": "utf-8",
        "skip_empty": True,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.path = self.Config.getpath("path", "")
        if not self.path:
            raise self.Config.error("path", "is required: the file to read")
        self.format = _check_format(self)
        self.batch_size = self.Config.getint("batch_size")
        self.lines_read = 0

    async def main(self) -> None:
        encoding = self.Config.get("encoding")
        skip_empty = self.Config.getboolean("skip_empty")
        try:
            handle = await asyncio.to_thread(open, self.path, encoding=encoding, newline="")
        except OSError as exc:
            raise OSError(f"{self.qualified_id}: cannot open {self.path!r}: {exc.strerror}") from exc
        context = {"source": "file", "path": self.path}
        try:
            while True:
                lines = await asyncio.to_thread(_read_lines, handle, self.batch_size)
                if not lines:
                    return
                first_line = self.lines_read + 1
                self.lines_read += len(lines)
                if self.format == "text":
                    events: list[Any] = [line.rstrip("\r\n") for line in lines]
                    if skip_empty:
                        events = [e for e in events if e]
                else:
                    events = self._decode(lines, first_line, skip_empty)
                if events:
                    await self.emit(events, context)
        finally:
            handle.close()

    def _decode(self, lines: list[str], first_line: int, skip_empty: bool) -> list[Any]:
        events: list[Any] = []
        append = events.append
        for number, line in enumerate(lines, first_line):
            text = line.rstrip("\r\n")
            if not text and skip_empty:
                continue
            try:
                append(decode_line(text, "json"))
            except ValueError as exc:
                context = {"source": "file", "path": self.path, "line": number}
                self.pipeline.reject(self, context, text, exc)
        return events


def _read_lines(handle: IO[str], count: int) -> list[str]:
    return list(itertools.islice(handle, count))


class FileSink(AsyncSink):
    """Appends events to ``path``, one line each (``format = json`` or ``text``).

    Events are acknowledged after the write reached the operating system (``fsync = true`` also waits
    for the disk). ``mode = truncate`` empties the file at start; ``append`` (default) keeps it. Writes
    run in a worker thread. Used as a dead-letter sink, it writes ``{"error": ..., "event": ...}``.
    """

    ConfigDefaults: ClassVar[dict[str, Any]] = {
        "path": "",
        "format": "json",
        "mode": "append",
        "fsync": False,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.path = self.Config.getpath("path", "")
        if not self.path:
            raise self.Config.error("path", "is required: the file to write")
        self.format = _check_format(self)
        mode = str(self.Config.get("mode")).lower()
        if mode not in ("append", "truncate"):
            raise self.Config.error("mode", f"expected append or truncate, got {mode!r}")
        self.mode = mode
        self.fsync = self.Config.getboolean("fsync")
        self._handle: IO[bytes] | None = None

    async def start(self) -> None:
        directory = os.path.dirname(self.path)
        if directory:
            await asyncio.to_thread(os.makedirs, directory, exist_ok=True)
        self._handle = await asyncio.to_thread(open, self.path, "ab" if self.mode == "append" else "wb")
        await super().start()

    async def write(self, batch: Batch) -> Sequence[ItemFailure] | None:
        chunks = []
        failures = []
        fmt = self.format
        for index, (context, event) in enumerate(batch):
            try:
                chunks.append(encode_line(event, fmt, context))
            except (TypeError, ValueError) as exc:
                failures.append(ItemFailure(index, exc))
        await asyncio.to_thread(self._write, b"".join(chunks))
        return failures

    def _write(self, data: bytes) -> None:
        assert self._handle is not None
        self._handle.write(data)
        self._handle.flush()
        if self.fsync:
            os.fsync(self._handle.fileno())

    async def close(self) -> None:
        await super().close()
        if self._handle is not None:
            handle, self._handle = self._handle, None
            await asyncio.to_thread(handle.close)
