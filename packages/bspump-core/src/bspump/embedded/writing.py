"""Appending whole lines to a file, knowing at every moment which of them reached it.

A write can stop half-way (a disk filling up, a quota, an I/O error): :class:`OutputFile` counts the
bytes that reached the file, cuts a half-written line off again (``ftruncate`` back to the end of the last
complete line), and says how many lines are complete, so that a sink acknowledges those and reports the
rest as failed; written again later, they never appear twice nor torn.
"""

from __future__ import annotations

import asyncio
import bisect
import errno
import logging
import os
import stat
from typing import Final

from ..failures import ErrorKind
from .checks import shown
from .descriptors import FileThread, NotPollable, wait_writable

log = logging.getLogger("bspump.sink")

_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
#: How far back the check for a half-written last line reads at a time.
_TAIL_BLOCK: Final = 1 << 16
#: How long to wait before writing again to a device that can be neither polled nor written at the moment.
_RETRY_DELAY: Final = 0.05


class OutputFile:
    """A file, FIFO or device opened to append lines to.

    A regular file is written in a :class:`FileThread`; :attr:`end` is its size up to the end of the last
    complete line. Other outputs (a FIFO, a terminal, ``/dev/null``) are written from the event loop when
    they take bytes, so a reader that does not read never holds a thread that stop cannot reach; a line cut
    short there cannot be taken back.
    """

    def __init__(self, fd: int, info: os.stat_result, thread: FileThread, path: str, name: str) -> None:
        self.fd = fd
        self.path = path
        self.name = name
        self.regular = stat.S_ISREG(info.st_mode)
        #: Bytes of the file that hold complete lines (a regular file only).
        self.end = info.st_size if self.regular else 0
        #: True while bytes past :attr:`end` are left over from a failed write (cut off before the next).
        self.torn = False
        #: True once the output cannot take more writes (a FIFO whose reader left): open it again.
        self.broken = False
        self._thread = thread

    @classmethod
    async def open(cls, path: str, *, truncate: bool, name: str) -> OutputFile:
        """Create the missing folders and open ``path`` for appending (emptied first if ``truncate``).

        In a regular file that ends with an unterminated line (a write cut short by a crash or a kill),
        that partial line is cut off and a warning logged: its events were never acknowledged, and are
        written again once their source reads them again.
        """
        thread = FileThread(name)
        try:
            fd, info, cut = await thread.run(_open, path, truncate, release=lambda opened: os.close(opened[0]))
        except BaseException:
            thread.close()
            raise
        if cut:
            log.warning("%s: %s ended with an unterminated line of %d bytes, left by a write that was cut "
                        "short; it was cut off before appending", name, shown(path), cut)
        return cls(fd, info, thread, path, name)

    async def append(self, lines: list[bytes], fsync: bool = False) -> tuple[int, OSError | None]:
        """Append ``lines`` (each ending with a newline); returns how many of them, from the first, are now
        complete in the file, and the error that stopped the rest (``None`` when all were written).

        With ``fsync`` (regular files), lines count as written once they are on the disk.
        """
        data = b"".join(lines)
        ends = list(_running_sum(lines))
        if self.regular:
            return await self._thread.run(self._append_to_file, data, ends, fsync)
        return await self._append_to_stream(data, ends)

    def _append_to_file(self, data: bytes, ends: list[int], fsync: bool) -> tuple[int, OSError | None]:
        fd = self.fd
        if self.torn:
            try:
                os.ftruncate(fd, self.end)
            except OSError as exc:
                return 0, exc
            self.torn = False
        written = 0
        error: OSError | None = None
        view = memoryview(data)
        try:
            while written < len(data):
                written += os.write(fd, view[written:])
        except OSError as exc:
            error = exc
        complete = bisect.bisect_right(ends, written)
        kept = ends[complete - 1] if complete else 0
        if kept != written:
            self._cut(self.end + kept)
        if fsync and kept:
            try:
                os.fsync(fd)
            except OSError as exc:  # what reached the disk is unknown: take the whole batch back
                self._cut(self.end)
                return 0, exc
        self.end += kept
        return complete, error

    def _cut(self, size: int) -> None:
        """Cut the file back to ``size``; if that fails too, the next append tries again first."""
        try:
            os.ftruncate(self.fd, size)
        except OSError as exc:
            log.warning("%s: cannot cut a half-written line off %s (%s); trying again before the next write",
                        self.name, shown(self.path), exc.strerror)
            self.torn = True

    async def _append_to_stream(self, data: bytes, ends: list[int]) -> tuple[int, OSError | None]:
        fd = self.fd
        written = 0
        error: OSError | None = None
        view = memoryview(data)
        while written < len(data):
            try:
                written += os.write(fd, view[written:])
            except BlockingIOError:
                try:
                    await wait_writable(fd)
                except NotPollable:
                    await asyncio.sleep(_RETRY_DELAY)
            except OSError as exc:
                error = exc
                break
        if error is not None and error.errno == errno.EPIPE:
            self.broken = True  # the reader is gone; a new one needs the FIFO opened again
        return bisect.bisect_right(ends, written), error

    def error_kind(self, error: OSError) -> ErrorKind | None:
        """How a write error of this output differs from the standard classification: a device that is
        full (``/dev/full``) stays full, so ``ENOSPC`` is permanent there; ``None`` otherwise."""
        if not self.regular and error.errno == errno.ENOSPC:
            return ErrorKind.PERMANENT
        return None

    def close(self) -> None:
        """Close the file once the write in progress (if any) returned."""
        self._thread.close(self.fd)
        self.fd = -1


def open_error_kind(error: OSError) -> ErrorKind | None:
    """A FIFO without a reader (``ENXIO``) may get one: opening it is tried again (``TRANSIENT``)."""
    return ErrorKind.TRANSIENT if error.errno == errno.ENXIO else None


def _running_sum(lines: list[bytes]) -> list[int]:
    total = 0
    ends = []
    for line in lines:
        total += len(line)
        ends.append(total)
    return ends


def _open(path: str, truncate: bool) -> tuple[int, os.stat_result, int]:
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    fd = os.open(path, _FLAGS | (os.O_TRUNC if truncate else 0), 0o666)
    try:
        info = os.fstat(fd)
        cut = 0
        if stat.S_ISREG(info.st_mode) and info.st_size:
            cut = _cut_unterminated_tail(path, fd, info.st_size)
            if cut:
                info = os.fstat(fd)
        return fd, info, cut
    except BaseException:
        os.close(fd)
        raise


def _cut_unterminated_tail(path: str, fd: int, size: int) -> int:
    """Cut off the bytes after the last newline of the file; returns how many were cut."""
    try:
        reader = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return 0  # a file we may write but not read: leave it as it is
    try:
        if os.pread(reader, 1, size - 1) == b"\n":
            return 0
        position = size
        while position > 0:
            start = max(0, position - _TAIL_BLOCK)
            block = os.pread(reader, position - start, start)
            newline = block.rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            position = start
        else:
            end = 0
    finally:
        os.close(reader)
    os.ftruncate(fd, end)
    return size - end
