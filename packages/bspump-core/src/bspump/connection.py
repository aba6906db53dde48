"""Connections: shared, reconnecting links to external systems.

Call order (what the framework calls, and when):

1. ``__init__`` when the application is assembled; read ``self.Config`` here, do no I/O.
2. ``preflight()`` by ``bspump check`` and before the application starts: verify what can be known
   without connecting (files exist, ports are valid); raise ``ConfigError`` via ``self.Config.error``.
3. ``connect()`` once when the application starts (again after every failure, with backoff). Create the
   client here; raise on failure.
4. ``disconnect()`` before each reconnect attempt and once at shutdown, after the last pipeline using the
   connection drained. Release the client; it may be called for a half-opened client.

Sources and sinks ask :meth:`Connection.classify` what kind of failure an error of their client is
(permanent, transient or link; see :mod:`bspump.failures`), and call :meth:`Connection.report_failure` when
it says the link is gone; the base class then reconnects while the pipelines that use the connection pause.
"""

from __future__ import annotations

import abc
import asyncio
import enum
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from .backoff import Backoff
from .component import build_config
from .config import Float, Int, Seconds
from .errors import describe_error
from .failures import ErrorKind, classify_error

if TYPE_CHECKING:
    from .application import BSPumpApplication

log = logging.getLogger("bspump.connection")


class ConnectionState(enum.Enum):
    """Where a connection is in its lifecycle."""

    CREATED = "created"
    CONNECTING = "connecting"
    READY = "ready"
    RECONNECTING = "reconnecting"
    CLOSING = "closing"
    CLOSED = "closed"


StateListener = Callable[["Connection", ConnectionState], None]


class Connection(abc.ABC):
    """Base class of connections; subclasses implement ``async connect()`` and ``async disconnect()``.

    Configuration comes from ``[connection:ID]`` in pipelines.conf, overridden by ``config``. The base
    keys control reconnection: ``reconnect_initial``/``reconnect_max`` seconds, ``reconnect_multiplier``,
    ``reconnect_jitter`` (fraction), ``connect_timeout`` seconds and ``max_connect_attempts`` (0 = retry
    for ever, what a 24/7 pipeline wants).
    """

    _bspump_base: ClassVar[bool] = True
    ConfigRequired: ClassVar[tuple[str, ...]] = ()
    ConfigDefaults: ClassVar[dict[str, Any]] = {
        "reconnect_initial": Seconds(0.5, min=0.01),
        "reconnect_max": Seconds(30.0, min=0.01),
        "reconnect_multiplier": Float(2.0, min=1.0, max=10.0),
        "reconnect_jitter": Float(0.2, min=0.0, max=1.0),
        "connect_timeout": Seconds(30.0, min=0.0),
        "max_connect_attempts": Int(0, min=0),
    }

    def __init__(
        self,
        app: BSPumpApplication,
        connection_id: str | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.app = app
        self.id = connection_id or type(self).__name__
        self.Config = build_config(type(self), app, f"connection:{self.id}", config)
        self.state = ConnectionState.CREATED
        self.last_error: BaseException | None = None
        self.connect_count = 0
        self.failure_count = 0
        self._ready = asyncio.Event()
        self._listeners: list[StateListener] = []
        self._users: set[int] = set()
        self._task: asyncio.Task[None] | None = None

    # -- subclass API -------------------------------------------------------------------------------
    @abc.abstractmethod
    async def connect(self) -> None:
        """Establish the link to the external system; raise if it cannot be established."""

    async def disconnect(self) -> None:
        """Release the link; called before reconnecting and at shutdown."""

    def classify(self, error: BaseException) -> ErrorKind:
        """What kind of failure ``error``, raised by this connection's client, is.

        Called by the sources and sinks that use the connection whenever a call of their client fails (a
        write, a commit, starting a consumer). ``LINK``: the link is gone (they report it; the connection
        reconnects and their pipelines pause); ``TRANSIENT``: the same call may succeed later (retried with
        backoff); ``PERMANENT``: the event or request is at fault (the error policy applies). Override it to
        map the client library's exceptions; the default understands the standard library's
        (:func:`bspump.failures.classify_error`).
        """
        return classify_error(error)

    def preflight(self) -> None:
        """Verify what can be known without connecting: files exist, ports are valid and free.

        Called by ``bspump check`` and by the application before it starts anything (no connection is
        open, no lookup loaded, no pipeline started yet). Raise :class:`~bspump.config.ConfigError` via
        ``self.Config.error(key, message)`` so that the error names ``file:line [section] key``; the
        default checks nothing. Keep it quick and synchronous: it runs once, before the pipelines.
        """

    # -- observation ----------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """True while the connection is usable."""
        return self.state is ConnectionState.READY

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until the connection is ready (raises ``TimeoutError`` after ``timeout`` seconds)."""
        if timeout is None:
            await self._ready.wait()
        else:
            async with asyncio.timeout(timeout):
                await self._ready.wait()

    def add_listener(self, listener: StateListener) -> None:
        """Call ``listener(connection, new_state)`` on every state change."""
        self._listeners.append(listener)

    def remove_listener(self, listener: StateListener) -> None:
        """Stop notifying ``listener``."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _set_state(self, state: ConnectionState) -> None:
        if state is self.state:
            return
        log.debug("connection %r: %s -> %s", self.id, self.state.value, state.value)
        self.state = state
        if state is ConnectionState.READY:
            self._ready.set()
        else:
            self._ready.clear()
        for listener in list(self._listeners):
            try:
                listener(self, state)
            except Exception:
                log.exception("connection %r: state listener %r failed", self.id, listener)

    # -- framework API --------------------------------------------------------------------------------
    def acquire(self, user: object) -> None:
        """Record that ``user`` (a pipeline) depends on this connection."""
        self._users.add(id(user))

    @property
    def users(self) -> int:
        """How many pipelines currently use this connection."""
        return len(self._users)

    async def open(self) -> None:
        """Start connecting in the background (idempotent); the state says when it is ready."""
        if self._task is None and self.state in (ConnectionState.CREATED, ConnectionState.CLOSED):
            self._task = asyncio.create_task(self._connect_loop(reconnect=False), name=f"connect:{self.id}")
            self._task.add_done_callback(self._loop_done)

    def report_failure(self, error: BaseException | None = None) -> None:
        """Tell the connection its link broke; it reconnects with backoff unless already doing so."""
        if self.state is not ConnectionState.READY:
            return
        self.failure_count += 1
        self.last_error = error
        log.warning("connection %r: failure reported (%s); reconnecting", self.id, describe_error(error))
        # Leave READY at once: a second report in the same turn of the loop (two clients of one connection, a
        # sink and a source noticing together) must not start a second reconnect loop beside this one.
        self._set_state(ConnectionState.RECONNECTING)
        self._task = asyncio.create_task(self._connect_loop(reconnect=True), name=f"reconnect:{self.id}")
        self._task.add_done_callback(self._loop_done)

    async def release(self, user: object) -> None:
        """``user`` has drained; close once the last user is gone and the application is stopping."""
        self._users.discard(id(user))
        if not self._users and self.app.stopping:
            await self.close()

    async def close(self) -> None:
        """Stop reconnecting and disconnect (idempotent)."""
        if self.state in (ConnectionState.CLOSING, ConnectionState.CLOSED):
            return
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        was_open = self.state is not ConnectionState.CREATED
        self._set_state(ConnectionState.CLOSING)
        if was_open:
            try:
                await self.disconnect()
            except Exception as exc:
                log.warning("connection %r: disconnect failed: %s", self.id, describe_error(exc))
        self._set_state(ConnectionState.CLOSED)

    async def _connect_loop(self, reconnect: bool) -> None:
        config = self.Config
        backoff = Backoff(
            initial=config.getseconds("reconnect_initial"),
            maximum=config.getseconds("reconnect_max"),
            multiplier=config.getfloat("reconnect_multiplier"),
            jitter=config.getfloat("reconnect_jitter"),
        )
        timeout = config.getseconds("connect_timeout")
        max_attempts = config.getint("max_connect_attempts")
        attempt = 0
        self._set_state(ConnectionState.RECONNECTING if reconnect else ConnectionState.CONNECTING)
        while True:
            if reconnect or attempt:
                await self._quiet_disconnect()
            attempt += 1
            try:
                async with asyncio.timeout(timeout if timeout > 0 else None):
                    await self.connect()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = exc
                if max_attempts and attempt >= max_attempts:
                    log.error(
                        "connection %r: giving up after %d attempts: %s (raise max_connect_attempts in "
                        "[connection:%s], 0 retries for ever)", self.id, attempt, describe_error(exc), self.id,
                    )
                    self.app.stop(exit_code=1)
                    return
                delay = backoff.next_delay()
                log.warning(
                    "connection %r: connect attempt %d failed: %s; retrying in %.2fs",
                    self.id, attempt, describe_error(exc), delay,
                )
                await asyncio.sleep(delay)
                continue
            self.connect_count += 1
            self._set_state(ConnectionState.READY)
            log.info("connection %r: ready", self.id)
            return

    async def _quiet_disconnect(self) -> None:
        try:
            await self.disconnect()
        except Exception as exc:  # cleaning up a half-open client: the reconnect matters, not this
            log.debug("connection %r: disconnect before reconnect failed: %s", self.id, describe_error(exc))

    def _loop_done(self, task: asyncio.Task[None]) -> None:
        if task is self._task:
            self._task = None
        if not task.cancelled() and task.exception() is not None:
            log.error("connection %r: connect loop crashed", self.id, exc_info=task.exception())

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id!r} {self.state.value}>"
