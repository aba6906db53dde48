"""Waiting on file descriptors without blocking the event loop, and where stop can interrupt the wait.

Two ways, by what the descriptor is:

- pipes, FIFOs, sockets and terminals tell the event loop when they are readable or writable
  (:func:`wait_readable`, :func:`wait_writable`); the wait is an ``await`` that cancellation ends at once;
- regular files (and devices that cannot be polled, such as ``/dev/zero``) never make a read wait for
  long, so their calls run in a :class:`FileThread`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class NotPollable(Exception):
    """The descriptor cannot be watched by the event loop (a regular file, ``/dev/zero``, ``/dev/null``)."""


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def wait_readable(fd: int) -> None:
    """Return once ``fd`` has data or its writer went away; raises :class:`NotPollable` if it cannot be
    watched. Cancelling the caller ends the wait at once."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    try:
        loop.add_reader(fd, _resolve, ready)
    except PermissionError:  # epoll refuses descriptors that do not support polling
        raise NotPollable(fd) from None
    try:
        await ready
    finally:
        loop.remove_reader(fd)


async def wait_writable(fd: int) -> None:
    """Return once ``fd`` takes more bytes; raises :class:`NotPollable` if it cannot be watched."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    try:
        loop.add_writer(fd, _resolve, ready)
    except PermissionError:
        raise NotPollable(fd) from None
    try:
        await ready
    finally:
        loop.remove_writer(fd)


class FileThread:
    """The blocking calls of one file, run one at a time in a thread of their own.

    Calls run in the order they were made, and :meth:`close` queues the closing of the descriptor behind
    the call in progress: a descriptor is never closed (and its number given to another file) while a
    read or write still uses it, even when the task that made the call was cancelled.
    """

    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._closed = False

    async def run(self, function: Callable[..., T], *args: Any, release: Callable[[T], Any] | None = None) -> T:
        """``function(*args)`` in the file's thread. If the caller is cancelled while the call runs, the call
        still completes; ``release`` then gets its result (an open descriptor to close), which would
        otherwise be lost."""
        future = self._executor.submit(function, *args)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            if release is not None:
                future.add_done_callback(lambda done: _release(done, release))
            raise

    def close(self, fd: int | None = None) -> None:
        """Close ``fd`` once the call in progress (if any) returned, and let the thread end."""
        if self._closed:
            return
        self._closed = True
        if fd is not None:
            self._executor.submit(_close_quietly, fd)
        self._executor.shutdown(wait=False)


def _release(done: Future[T], release: Callable[[T], Any]) -> None:
    if not done.cancelled() and done.exception() is None:
        release(done.result())


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
