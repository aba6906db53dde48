"""PostgreSQLNotifySource: LISTEN on channels; each notification is an event."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, ClassVar

import asyncpg
import orjson

from bspump import Source
from bspump import context as keys
from bspump.config import Choice, Int

from .connection import PostgreSQLConnection
from .sql import parse_names

log = logging.getLogger("bspump.postgresql")

#: Context key of the channel a notification arrived on, and of the notifying backend's PID.
CHANNEL = "channel"
PID = "pid"
#: Dropped notifications logged at WARNING before the rest go to DEBUG.
DROP_LOG_LIMIT = 10


class PostgreSQLNotifySource(Source):
    """Notifications (``NOTIFY channel, 'payload'``) received on a connection that LISTENs on ``channels``.

    What it is for: wake-ups ("the orders table changed, read it"), not data. PostgreSQL delivers a
    notification only to sessions listening when it is sent: one sent while the listener is disconnected
    (a restart, a network failure, before the pipeline started) is lost, and nothing acknowledges it. For
    data, use :class:`PostgreSQLCDCSource` or :class:`PostgreSQLSource` in incremental mode.

    Configuration (``[pipeline:ID:PostgreSQLNotifySource]``):

    - ``channels``: the channels to LISTEN on, separated by commas.
    - ``format``: ``text`` (the event is the payload string) or ``json`` (the payload decoded; a payload that is
      not JSON meets the pipeline's error policy, e.g. the dead-letter sink, with its channel in the context).
    - ``batch_size``: notifications handed to the pipeline together at most.
    - ``queue_limit``: notifications kept while the pipeline is throttled; past it the oldest waiting ones are
      dropped (counted in the ``dropped`` gauge, logged), since a wake-up repeated is enough.

    The context holds ``channel`` and ``pid`` (of the notifying backend). The source holds one connection of the
    pool while it runs and listens again on a fresh one after the connection is lost.
    """

    ConfigDefaults: ClassVar[dict[str, Any]] = {
        "channels": "",
        "format": Choice("text", ("text", "json")),
        "batch_size": Int(100, min=1, max=100_000),
        "queue_limit": Int(10_000, min=1, max=10_000_000),
    }
    ConfigRequired: ClassVar[tuple[str, ...]] = ("channels",)
    ConnectionType = PostgreSQLConnection

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.channels = parse_names(str(self.Config.get("channels")))
        if not self.channels:
            raise self.Config.error("channels", "name at least one channel")
        self.json = self.Config.getchoice("format") == "json"
        self.batch_size = self.Config.getint("batch_size")
        self.queue_limit = self.Config.getint("queue_limit")
        self._queue: asyncio.Queue[tuple[str, int, str]] = asyncio.Queue()
        self._wake = asyncio.Event()
        #: Notifications received, and dropped because the queue was full.
        self.received = 0
        self.dropped = 0
        #: Set while LISTEN is in effect (tests wait for it before notifying).
        self.listening = asyncio.Event()

    @property
    def pg(self) -> PostgreSQLConnection:
        connection = self.connection
        assert isinstance(connection, PostgreSQLConnection)
        return connection

    def gauges(self) -> dict[str, float]:
        """``queued`` notifications waiting for the pipeline and ``dropped`` ones so far."""
        return {"queued": float(self._queue.qsize()), "dropped": float(self.dropped)}

    def _on_notification(self, _connection: Any, pid: int, channel: str, payload: str) -> None:
        self.received += 1
        if self._queue.qsize() >= self.queue_limit:
            self._queue.get_nowait()
            self.dropped += 1
            (log.warning if self.dropped <= DROP_LOG_LIMIT else log.debug)(
                "%s: %d notifications waiting (queue_limit); the oldest was dropped", self.qualified_id,
                self.queue_limit)
        self._queue.put_nowait((channel, pid, payload))
        self._wake.set()

    async def main(self) -> None:
        """Listen on a pooled connection and emit what arrives; listen again after the connection is lost."""
        while True:
            await self.start_client(self._listen, "listening (notifications sent until it listens again are lost)")

    async def _listen(self) -> None:
        lost = asyncio.Event()

        def terminated(_connection: Any) -> None:
            lost.set()
            self._wake.set()

        async with self.pg.session() as session:
            session.add_termination_listener(terminated)
            try:
                for channel in self.channels:
                    await session.add_listener(channel, self._on_notification)
                self.listening.set()
                while not lost.is_set():
                    if self._queue.empty():
                        self._wake.clear()
                        await self._wake.wait()
                    await self._emit_queued()
            finally:
                self.listening.clear()
                # A connection lost with the server is already detached from the pool: nothing to clean up then.
                with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                    session.remove_termination_listener(terminated)
                    for channel in self.channels:
                        await session.remove_listener(channel, self._on_notification)
        raise ConnectionError("the listening connection was lost")

    async def _emit_queued(self) -> None:
        queue = self._queue
        events: list[Any] = []
        contexts: list[dict[str, Any]] = []
        while not queue.empty() and len(events) < self.batch_size:
            channel, pid, payload = queue.get_nowait()
            context = {keys.SOURCE: f"postgresql:{channel}", CHANNEL: channel, PID: pid}
            if self.json:
                try:
                    value = orjson.loads(payload)
                except orjson.JSONDecodeError as error:
                    self.pipeline.reject(self, context, payload,
                                         ValueError(f"notification on channel {channel!r} is not JSON: {error}"))
                    continue
            else:
                value = payload
            events.append(value)
            contexts.append(context)
        if events:
            await self.emit(events, contexts=contexts)
