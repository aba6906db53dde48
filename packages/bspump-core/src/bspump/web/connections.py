"""The web endpoint's open connections, oldest first, and which one to close when a new one needs room."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Coroutine, Iterator
from typing import Any

__all__ = ["ConnectionTable", "OpenConnection"]


class OpenConnection:
    """One accepted connection and the task serving it. The socket is closed when the task ends,
    however it ends (also when it is cancelled before it ever ran)."""

    def __init__(self, sock: socket.socket, peer: str) -> None:
        self.sock = sock
        self.peer = peer
        #: False while the request head is awaited (or an error answer lingers); True once a valid
        #: request is being answered. Connections that are not answering are closed first.
        self.answering = False
        self.task: asyncio.Task[None] | None = None

    async def closed(self) -> None:
        """Wait until the serving task ended and the socket is closed (bounded: cancelled tasks end at once)."""
        if self.task is not None:
            await asyncio.wait({self.task})


class ConnectionTable:
    """Holds at most ``limit`` connections; the endpoint asks it which one to close when it is full."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        # dicts keep insertion order: the first entry is the oldest connection.
        self._open: dict[OpenConnection, None] = {}

    def __len__(self) -> int:
        return len(self._open)

    def __iter__(self) -> Iterator[OpenConnection]:
        return iter(list(self._open))

    @property
    def full(self) -> bool:
        """True when a new connection needs another one closed first."""
        return len(self._open) >= self.limit

    def serve(self, connection: OpenConnection, serving: Coroutine[Any, Any, None]) -> None:
        """Start the task that serves ``connection``; the table forgets it and closes its socket when it ends."""
        connection.task = asyncio.create_task(serving, name=f"bspump web {connection.peer}")
        connection.task.add_done_callback(lambda _: self._forget(connection))
        self._open[connection] = None

    def evict(self) -> OpenConnection | None:
        """Cancel the oldest connection that is not answering a request (else the oldest of all) and
        forget it at once; ``None`` when the table is empty. Its socket closes when its task ends."""
        victim = next((c for c in self._open if not c.answering), None) or next(iter(self._open), None)
        if victim is not None:
            del self._open[victim]
            if victim.task is not None:
                victim.task.cancel()
        return victim

    async def close_all(self) -> None:
        """Cancel every connection and wait until their sockets are closed (the endpoint is stopping)."""
        connections = list(self._open)
        for connection in connections:
            if connection.task is not None:
                connection.task.cancel()
        for connection in connections:
            await connection.closed()

    def _forget(self, connection: OpenConnection) -> None:
        # Closing here, once the task is done, means the event loop has stopped watching the socket.
        self._open.pop(connection, None)
        connection.sock.close()
