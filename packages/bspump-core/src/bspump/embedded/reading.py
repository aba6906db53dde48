"""Reading bytes from a file, FIFO, pipe, terminal or device so that stop can always interrupt the read."""

from __future__ import annotations

import asyncio
import os
import stat
from typing import Final

from .descriptors import FileThread, NotPollable, wait_readable

#: Bytes asked for per read: large for files (fewer thread hops), a pipe's capacity for the rest.
FILE_CHUNK: Final = 1 << 20
STREAM_CHUNK: Final = 1 << 16

#: How long to wait before reading again a device that can be neither polled nor read at the moment.
RETRY_DELAY: Final = 0.05

_OPEN_FLAGS: Final = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


class ByteReader:
    """Reads an open descriptor chunk by chunk; :meth:`read` returns ``b""`` at the end of input.

    Regular files and block devices (``seekable``) are read in a :class:`FileThread`. Everything else
    (FIFOs, pipes, sockets, terminals, character devices) is read only once the event loop says it is
    readable, so no read ever waits in a thread that cancellation cannot reach; a device the loop cannot
    watch (``/dev/zero``) never waits either, and is read in the thread. Opening never waits:
    :meth:`open` uses ``O_NONBLOCK``, so a FIFO without a writer opens at once, and its first read waits
    (cancellably) for a writer to write or to close.
    """

    def __init__(self, fd: int, *, name: str, owned: bool = True) -> None:
        self.fd = fd
        self.name = name
        self.owned = owned
        self.info = os.fstat(fd)
        mode = self.info.st_mode
        #: A regular file or block device: it can be read again from a byte offset.
        self.seekable = stat.S_ISREG(mode) or stat.S_ISBLK(mode)
        #: A FIFO or pipe (its end of input is its writers going away).
        self.fifo = stat.S_ISFIFO(mode)
        self._polled = not self.seekable
        self._chunk = FILE_CHUNK if self.seekable else STREAM_CHUNK
        self._thread: FileThread | None = None
        #: Bytes read so far.
        self.bytes_read = 0

    @classmethod
    async def open(cls, path: str, *, name: str) -> ByteReader:
        """Open ``path`` for reading without waiting for a FIFO's writer (the open runs in a thread)."""
        thread = FileThread(name)
        try:
            fd = await thread.run(os.open, path, _OPEN_FLAGS, release=os.close)
        except BaseException:
            thread.close()
            raise
        try:
            reader = cls(fd, name=name)
        except BaseException:
            thread.close(fd)
            raise
        reader._thread = thread
        return reader

    def seek(self, offset: int) -> None:
        """Continue reading at byte ``offset`` (a seekable input only)."""
        os.lseek(self.fd, offset, os.SEEK_SET)

    async def read(self) -> bytes:
        """The next chunk, ``b""`` at the end of input; cancelling the caller interrupts a wait for data."""
        if self._polled:
            try:
                data = await self._read_when_ready()
            except NotPollable:
                self._polled = False
            else:
                self.bytes_read += len(data)
                return data
        data = await self._read_in_thread()
        self.bytes_read += len(data)
        return data

    async def _read_when_ready(self) -> bytes:
        fd, size = self.fd, self._chunk
        while True:
            # Wait first, even on a non-blocking descriptor: a FIFO that no writer opened yet reads as
            # empty (end of input), while the event loop reports it readable only once a writer wrote or
            # went away.
            await wait_readable(fd)
            try:
                return os.read(fd, size)
            except (BlockingIOError, InterruptedError):
                continue  # another reader took the data, or a signal: wait again

    async def _read_in_thread(self) -> bytes:
        if self._thread is None:
            self._thread = FileThread(self.name)
        while True:
            try:
                return await self._thread.run(os.read, self.fd, self._chunk)
            except BlockingIOError:  # a device that is neither pollable nor ready
                await asyncio.sleep(RETRY_DELAY)

    def close(self) -> None:
        """Close the descriptor (if this reader owns it) once no read uses it any more."""
        fd = self.fd if self.owned else None
        if self._thread is not None:
            self._thread.close(fd)
            self._thread = None
        elif fd is not None:
            os.close(fd)
        self.fd = -1
