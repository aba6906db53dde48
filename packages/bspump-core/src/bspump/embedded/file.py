"""Newline-delimited files: one event per line, text or JSON."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from .. import context as keys
from ..async_sink import AsyncSink
from ..batch import Batch
from ..checkpoint import CheckpointError
from ..config import Choice
from ..delivery import Delivery
from ..failures import ErrorKind, ItemFailure
from ..positioned_source import PositionedSource
from .checks import (
    FORMATS,
    check_line_encoding,
    check_path,
    check_readable_input,
    check_writable_output,
    shown,
)
from .codec import encode_line
from .lines import (
    BATCH_SIZE,
    MAX_LINE_BYTES,
    Item,
    LineDecoder,
    LineSplitter,
    SkippedRest,
)
from .reading import ByteReader
from .writing import OutputFile, open_error_kind

log = logging.getLogger("bspump.source")
sink_log = logging.getLogger("bspump.sink")


@dataclass(frozen=True)
class ResumePoint:
    """Where reading starts: byte ``offset`` at the start of a line, ``line`` lines before it, and ``tail``
    bytes after it that a previous run emitted as an unterminated last line."""

    offset: int = 0
    line: int = 0
    tail: int = 0


def resume_point(position: Any, info: os.stat_result) -> tuple[ResumePoint, str | None]:
    """Where to continue reading the file described by ``info``, given the ``position`` its checkpoint holds
    (``None`` if it has none); the second value says why the file is read from the beginning instead."""
    if position is None:
        return ResumePoint(), None
    try:
        offset, line, tail = int(position["offset"]), int(position.get("line", 0)), int(position.get("tail", 0))
        identity = (int(position["dev"]), int(position["ino"]))
    except (TypeError, KeyError, ValueError, AttributeError):
        return ResumePoint(), f"its checkpoint holds a position that is not understood ({str(position)[:80]})"
    if identity != (info.st_dev, info.st_ino):
        return ResumePoint(), ("it is not the file the checkpoint was taken from (another device or inode: "
                               "replaced or rotated)")
    if info.st_size < offset:
        return ResumePoint(), (f"it is shorter ({info.st_size:,} bytes) than the checkpoint's offset {offset:,} "
                               "(truncated)")
    return ResumePoint(offset, line, tail), None


class FileSource(PositionedSource[str]):
    """Reads ``path`` line by line (``format = text`` gives strings, ``json`` one value per line) and ends at
    the end of the file.

    Keys: ``path``; ``format``; ``batch_size`` (lines per batch, 1 to 1,000,000); ``encoding`` (one in
    which a newline is the byte 0x0A); ``skip_empty``; ``max_line_bytes`` (64 B to 1 GiB, default 1 MiB);
    ``checkpoint`` (default true); ``commit_interval`` (default 1s).

    **Positions.** A regular file's position is committed through the checkpoint store (``[general]
    state_dir``) as ``{"offset", "line", "dev", "ino"}``: the byte offset after the last complete line of
    the acknowledged batches, and the file's identity. At start the source continues at the committed
    offset when the file is the same (device and inode) and not shorter; otherwise it reads from the
    beginning and logs why. It commits every ``commit_interval`` and at stop, so after a graceful stop it
    continues exactly where the acknowledged output ended, and after a kill it reads again at most what
    was read since the last commit. ``checkpoint = false`` reads from the beginning every time and keeps
    no position. FIFOs, pipes and devices cannot be read again: they have no checkpoint.

    **The last line.** A file whose last line has no newline is common, so that line is emitted at the end
    of the file. Its position is committed as the offset where it starts plus ``"tail"``, its length:
    the next run skips it if the file still ends with the same unterminated line, and reads it again in
    full if it was completed since (a file being written may have been read with its last line
    half-written; that line is then emitted twice, the second time whole).

    **Faults in the data** meet the pipeline's error policy as events, with ``path``, ``line`` and
    ``offset`` (of the line's first byte) in their context: a line that is not valid JSON (the event is its
    text), that does not decode with ``encoding`` (the event is its bytes), or that is longer than
    ``max_line_bytes`` (the event is its first 1024 bytes; the error says how long it was). The file is
    read in binary and split at the byte 0x0A, so memory stays bounded by ``max_line_bytes`` per line
    whatever the input (``/dev/zero`` included).

    **Stop** interrupts any read: regular files are read in a thread of the source's own, a chunk at a
    time; FIFOs, pipes and terminals are opened without waiting for a writer and read when the event loop
    says they are readable.
    """

    ConfigDefaults: ClassVar[dict[str, Any]] = {
        "path": "",
        "format": Choice("json", FORMATS),
        "batch_size": BATCH_SIZE,
        "encoding": "utf-8",
        "skip_empty": True,
        "max_line_bytes": MAX_LINE_BYTES,
        "checkpoint": True,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.path = check_path(self)
        self.format = self.Config.getchoice("format")
        self.batch_size = self.Config.getint("batch_size")
        self.max_line_bytes = self.Config.getint("max_line_bytes")
        self.decoder = LineDecoder(self.format, check_line_encoding(self), self.Config.getboolean("skip_empty"),
                                   self.max_line_bytes)
        self.use_checkpoint = self.Config.getboolean("checkpoint")
        #: The partition this file's position is committed under: its absolute path.
        self.partition = os.path.abspath(self.path)
        #: Where the current run started reading (set once the file is open).
        self.started_at: ResumePoint | None = None
        #: Lines read so far (complete or not, good or not).
        self.lines_read = 0
        self.reader: ByteReader | None = None
        self._context = {keys.SOURCE: "file", keys.PATH: self.path}
        self._identity: dict[str, int] | None = None  # the file's dev and ino, when positions are committed
        self._unterminated = 0  # the tail a previous run emitted, until this run reads past it

    def preflight(self) -> None:
        """Check that the file exists and is readable (or is a FIFO or a device); called by ``bspump check``
        and before the application starts."""
        check_readable_input(self, self.path)

    @property
    def bytes_read(self) -> int:
        """Bytes read so far by this run."""
        return self.reader.bytes_read if self.reader is not None else 0

    async def main(self) -> None:
        try:
            reader = await ByteReader.open(self.path, name=self.qualified_id)
        except OSError as exc:
            self.pipeline.fail(self.Config.error("path", f"cannot open {shown(self.path)}: {exc.strerror}"))
            return
        self.reader = reader
        try:
            start = await self._resume(reader)
            if start is not None:
                self.started_at = start
                await self._read(reader, start)
        finally:
            reader.close()

    async def _resume(self, reader: ByteReader) -> ResumePoint | None:
        """Where this run starts reading; ``None`` if it cannot start (the pipeline then stops)."""
        if not reader.seekable or not self.use_checkpoint:
            if reader.fifo:
                log.info("%s: reading the FIFO %s, waiting for a writer (no checkpoint: it cannot be read "
                         "again)", self.qualified_id, shown(self.path))
            return ResumePoint()
        try:
            stored = await self.load_positions()
        except CheckpointError as exc:
            self.pipeline.fail(CheckpointError(f"{self.qualified_id}: {exc}"))
            return None
        start, why = resume_point(stored.get(self.partition), reader.info)
        self._identity = {"dev": reader.info.st_dev, "ino": reader.info.st_ino}
        if why is not None:
            log.warning("%s: reading %s from the beginning: %s", self.qualified_id, shown(self.path), why)
        elif start.offset or start.tail:
            log.info("%s: resuming %s at byte %d (line %d) from the checkpoint", self.qualified_id,
                     shown(self.path), start.offset, start.line + 1)
            reader.seek(start.offset)
        self._unterminated = start.tail
        return start

    async def _read(self, reader: ByteReader, start: ResumePoint) -> None:
        splitter = LineSplitter(self.max_line_bytes)
        offset, line = start.offset, start.line
        while chunk := await reader.read():
            items = splitter.feed(chunk)
            if items:
                if self._unterminated:
                    log.info("%s: line %d of %s had no newline when last read and was completed since; it is "
                             "read again in full", self.qualified_id, line + 1, shown(self.path))
                    self._unterminated = 0
                offset, line = await self._emit_lines(items, offset, line, splitter.marked)
        for item in splitter.finish():
            await self._emit_tail(item, offset, line, start)

    async def _emit_lines(self, items: list[Item], offset: int, line: int, marked: bool) -> tuple[int, int]:
        """Emit complete lines in batches; returns the offset and line count after them."""
        size = self.batch_size
        for first in range(0, len(items), size):
            part = items if len(items) <= size else items[first:first + size]
            offset, line = await self._emit_part(part, offset, line, marked)
        return offset, line

    async def _emit_part(self, part: list[Item], offset: int, line: int, marked: bool) -> tuple[int, int]:
        decoded = self.decoder.decode_items(part, offset, line, marked)
        delivery = self._track(decoded.offset, decoded.count)
        for number, at, raw, error in decoded.rejects:
            self._reject(raw, error, number, at, delivery)
        self.lines_read += decoded.count - line
        await self._hand_over(decoded.events, delivery)
        return decoded.offset, decoded.count

    async def _emit_tail(self, item: Item, offset: int, line: int, start: ResumePoint) -> None:
        """Emit the unterminated last line at the end of the file (see the class documentation)."""
        consumed = len(item) if isinstance(item, bytes) else item.consumed
        if self._unterminated and (offset, consumed) == (start.offset, self._unterminated):
            return  # the same unterminated line that the previous run emitted and committed
        delivery = self._track(offset, line, tail=consumed)
        decoded = self.decoder.decode_items([item], offset, line, marked=not isinstance(item, bytes))
        for number, at, raw, error in decoded.rejects:
            self._reject(raw, error, number, at, delivery)
        if not isinstance(item, SkippedRest):
            self.lines_read += 1
        await self._hand_over(decoded.events, delivery)

    def _track(self, offset: int, line: int, tail: int = 0) -> Delivery | None:
        """The delivery of a batch whose acknowledgement makes ``offset`` committable (``None`` when this
        source commits no position)."""
        if self._identity is None:
            return None
        position: dict[str, int] = {"offset": offset, "line": line, **self._identity}
        if tail:
            position["tail"] = tail
        return self.track({self.partition: position})

    def _reject(self, raw: Any, error: Exception, number: int, offset: int, delivery: Delivery | None) -> None:
        context = {**self._context, keys.LINE: number, keys.OFFSET: offset}
        self.pipeline.reject(self, context, raw, error, delivery)

    async def _hand_over(self, events: list[Any], delivery: Delivery | None) -> None:
        if not events and delivery is None:
            return
        await self.wait_ready()
        await self.emit(events, self._context, delivery=delivery)
        if delivery is not None:
            await self.maybe_commit()


class FileSink(AsyncSink):
    """Appends events to ``path``, one line each (``format = json`` or ``text``); a failed event arriving
    as a dead letter is written as ``{"error": ..., "path": ..., "line": ..., "event": ...}``.

    **Acknowledgement.** An event is acknowledged once its whole line reached the file (the operating
    system; ``fsync = true`` waits for the disk). A write that fails half-way (a full disk) is cut back to
    the end of the last complete line, the events whose lines are complete are acknowledged, and the rest
    are reported with the error: ``ENOSPC`` is retried with backoff for up to ``retry_timeout``, then meets
    the error policy; ``EROFS``, ``EACCES``, ``ENOENT``, ``EISDIR`` meet it at once. No line is ever written
    twice or left torn. If the file cannot be opened at start, every write fails with that error instead of
    the sink crashing: the policy applies at once when trying again cannot help (a folder, a missing
    folder behind a link, a read-only file system), else the open is tried again with each write (a full
    disk, a FIFO without a reader yet). ``ENOSPC`` from a device that is not a file (``/dev/full``) is
    permanent.

    ``mode = truncate`` empties the file at start; ``append`` (default) keeps it, first cutting off an
    unterminated last line that a write cut short by a crash or kill left behind (those events were never
    acknowledged, and come again). Missing folders are created. The sink owns its file: nothing else may
    write to it meanwhile. Writes to a regular file run in a thread of the sink's own; a FIFO, a terminal
    or a device is written when the event loop says it takes bytes, so stop is never kept waiting.

    Keys: ``path``; ``format``; ``mode``; ``fsync``; ``retry_timeout`` (how long a full disk is waited
    for; default 60s). ``concurrency`` must stay 1.
    """

    ConfigDefaults: ClassVar[dict[str, Any]] = {
        "path": "",
        "format": Choice("json", FORMATS),
        "mode": Choice("append", ("append", "truncate")),
        "fsync": False,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.path = check_path(self)
        self.format = self.Config.getchoice("format")
        self.mode = self.Config.getchoice("mode")
        self.fsync = self.Config.getboolean("fsync")
        if self.concurrency != 1:
            raise self.Config.error("concurrency", "must be 1: a FileSink writes one batch at a time, so that "
                                                   "lines reach the file in order")
        self.output: OutputFile | None = None
        self._truncate = self.mode == "truncate"  # until the first successful open
        self._open_error: OSError | None = None  # why the file is not open, when it is not

    def preflight(self) -> None:
        """Check that the path is not a folder and that the file, or the nearest folder on its way that
        exists, is writable; called by ``bspump check`` and before the application starts."""
        check_writable_output(self, self.path)

    async def start(self) -> None:
        error = await self._open()
        if error is not None:
            sink_log.warning("%s: cannot open %s (%s); writes fail with that error", self.qualified_id,
                             shown(self.path), error.strerror)
        await super().start()

    async def _open(self) -> OSError | None:
        """Open the file; returns why it could not be opened. An error that trying again cannot cure
        (``EISDIR``, ``ENOENT``, ``EROFS``...) is final: later writes fail with it without trying again."""
        error = self._open_error
        if error is not None and open_error_kind(error) is None and self.classify(error) is ErrorKind.PERMANENT:
            return error
        try:
            self.output = await OutputFile.open(self.path, truncate=self._truncate, name=self.qualified_id)
        except OSError as exc:
            self._open_error = exc
            return exc
        self._truncate = False
        self._open_error = None
        return None

    async def write(self, batch: Batch) -> Sequence[ItemFailure] | None:
        lines: list[bytes] = []
        indexes: list[int] = []
        failures: list[ItemFailure] = []
        fmt = self.format
        for index, (context, event) in enumerate(batch):
            try:
                lines.append(encode_line(event, fmt, context))
            except (TypeError, ValueError) as exc:
                failures.append(ItemFailure(index, exc))
            else:
                indexes.append(index)
        if not lines:
            return failures
        if self.output is None:
            error = await self._open()
            if error is not None:
                self.write_errors += 1
                kind = open_error_kind(error)
                failures.extend(ItemFailure(index, error, kind) for index in indexes)
                return failures
        output = self.output
        assert output is not None
        written, error = await output.append(lines, self.fsync)
        if error is not None:
            self.write_errors += 1
            kind = output.error_kind(error)
            failures.extend(ItemFailure(index, error, kind) for index in indexes[written:])
            if output.broken:
                output.close()
                self.output = None
        return failures

    async def close(self) -> None:
        await super().close()
        output, self.output = self.output, None
        if output is not None:
            output.close()
