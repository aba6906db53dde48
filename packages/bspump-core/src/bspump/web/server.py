"""The endpoint itself: listening sockets, its own accept loop, one short task per connection, and the
three routes. Written on the event loop's socket calls so that bspump-core needs no web framework."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import orjson
from prometheus_client import CollectorRegistry, generate_latest

from ..config import ComponentConfig, ConfigError, Int
from ..pipeline import PipelineState
from ..ratelimit import RateLimitedLog
from .collector import EndpointCollector, EndpointStats, PipelineCollector
from .connections import ConnectionTable, OpenConnection
from .http import Request, RequestRejected, format_response, parse_head, read_head

if TYPE_CHECKING:
    from ..application import BSPumpApplication

__all__ = ["WebServer"]

log = logging.getLogger("bspump.web")

LOG_INTERVAL: Final = 10.0  # seconds between two log lines of the same kind
_BACKLOG: Final = socket.SOMAXCONN  # a prober queued behind an attack waits in the backlog, not in SYN retries
_ACCEPT_PAUSE: Final = (0.01, 1.0)  # first and longest pause after a failed accept (doubling in between)
_LINGER_SECONDS: Final = 1.0
_LINGER_BYTES: Final = 256 * 1024
_OUT_OF_DESCRIPTORS: Final = frozenset({errno.EMFILE, errno.ENFILE})


def unmasked(text: str) -> str:
    """The default :attr:`WebServer.mask`: leaves the text as it is."""
    return text


class WebServer:
    """Serves ``/metrics`` (Prometheus text), ``/health`` (no pipeline failed) and ``/ready`` (every
    connection ready and no pipeline paused for a reason other than backpressure).

    The application creates it from ``[web]`` (:meth:`from_config`), calls :meth:`start` before the
    pipelines start and :meth:`stop` after they stopped. Plugins may register collectors on
    :attr:`registry`.

    It is built to keep ``/health`` answering while it is abused, and never to let the abuse reach the
    pipelines or the log:

    - at most ``max_connections`` connections are open (``[web] max_connections``, default 64). A new
      connection is never refused: when the table is full, the oldest connection still sending its
      request (a slowloris) is closed to make room, else the oldest of all. Legitimate requests take
      milliseconds, so the oldest connection is nearly always the abusive one, and a prober is answered
      rather than told 503 (which an orchestrator would take for an unhealthy process);
    - the whole request head must arrive within :attr:`head_timeout` seconds (else 408, or a quiet
      close for a connection that sent nothing) and fit in :attr:`max_head_bytes` (else 414 for the
      request line, 431 for the headers); a malformed head gets 400. Error answers close the connection
      after reading what the client still sends for a moment, so that the client reads the answer
      rather than a reset. An answer must be taken within :attr:`write_timeout` seconds;
    - accept failures (EMFILE/ENFILE when the process is out of file descriptors) do not stop the
      endpoint: it closes its oldest connection to free a descriptor, or pauses and retries;
    - every log line of the endpoint is rate-limited (one line per kind every ``LOG_INTERVAL`` = 10
      seconds, with the count of those held back); the full counts are in ``/metrics``
      (``bspump_web_*``). No traceback is logged for a request unless the log level is DEBUG;
    - ``/metrics`` is rendered at most once per :attr:`metrics_max_age` seconds (1 s): a storm of scrapes
      is answered from the last rendering instead of taking the event loop from the pipelines, at the
      price of values up to that old. ``/health`` and ``/ready`` are computed for every request.

    :attr:`mask` is applied to every response body and to logged error details; the application sets
    it to hide configured secret values (identity by default).
    """

    ConfigDefaults = {"listen": "", "max_connections": Int(64, min=1, max=4096)}

    #: Seconds within which the whole request head must arrive.
    head_timeout: float = 5.0
    #: Seconds within which the client must take the answer.
    write_timeout: float = 10.0
    #: Bytes the request line, and the whole head, may take.
    max_head_bytes: int = 8192
    #: Seconds a rendering of ``/metrics`` is served again before the next one.
    metrics_max_age: float = 1.0

    def __init__(self, app: BSPumpApplication, host: str, port: int, *, max_connections: int = 64,
                 config: ComponentConfig | None = None) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.mask: Callable[[str], str] = unmasked
        self.stats = EndpointStats()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(PipelineCollector(app))
        self._config = config if config is not None else ComponentConfig(self.ConfigDefaults, label="web")
        self._connections = ConnectionTable(max_connections)
        self.registry.register(EndpointCollector(self.stats, self._connections))
        self._listeners: list[socket.socket] = []
        self._accepting: list[asyncio.Task[None]] = []
        self._log = RateLimitedLog(log, LOG_INTERVAL)
        self._metrics_cache: tuple[float, bytes] | None = None

    @classmethod
    def from_config(cls, app: BSPumpApplication) -> WebServer | None:
        """A server if ``[web] listen = HOST:PORT`` is set, else ``None``."""
        section = app.config.section("web")
        config = ComponentConfig(cls.ConfigDefaults, section, label="web")
        listen = str(config.get("listen") or "").strip()
        if not listen:
            return None
        host, sep, port_text = listen.rpartition(":")
        if not sep or not port_text.isdigit():
            raise config.error("listen", f"expected HOST:PORT, got {listen!r}")
        port = int(port_text)
        if port > 65535:
            raise config.error("listen", f"port {port} is out of range 0-65535")
        max_connections = config.getint("max_connections")
        return cls(app, host.strip("[]") or "127.0.0.1", port, max_connections=max_connections, config=config)

    @property
    def max_connections(self) -> int:
        """How many connections the endpoint holds open at most."""
        return self._connections.limit

    @property
    def listening(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return bool(self._listeners)

    # -- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind and start accepting (the application calls this before starting the pipelines).

        A host that does not resolve or an address that cannot be bound (in use, not local, no
        permission) is a :class:`~bspump.ConfigError` naming ``[web] listen``.
        """
        loop = asyncio.get_running_loop()
        try:
            addresses = await loop.getaddrinfo(self.host or None, self.port, type=socket.SOCK_STREAM,
                                               flags=socket.AI_PASSIVE)
        except socket.gaierror as exc:
            raise self._unusable(exc) from None
        try:
            for family, kind, proto, _, address in dict.fromkeys(addresses):
                if self._listeners:  # with port 0, every address gets the port the first one was given
                    address = (address[0], self.port, *address[2:])
                self._listeners.append(self._listen(family, kind, proto, address))
                self.port = self._listeners[0].getsockname()[1]
        except OSError as exc:
            self._close_listeners()
            raise self._unusable(exc) from None
        self._accepting = [asyncio.create_task(self._accept(listener), name="bspump web accept")
                           for listener in self._listeners]
        log.info("web endpoint on http://%s:%d (/metrics, /health, /ready)", self.host, self.port)

    async def stop(self) -> None:
        """Stop accepting and close every connection (the application calls this after the pipelines stopped)."""
        for task in self._accepting:
            task.cancel()
        for result in await asyncio.gather(*self._accepting, return_exceptions=True):
            if isinstance(result, Exception):
                log.error("web endpoint: accepting connections failed: %s", self.mask(repr(result)))
        self._accepting = []
        self._close_listeners()
        await self._connections.close_all()
        self._log.flush()

    @staticmethod
    def _listen(family: int, kind: int, proto: int, address: tuple[object, ...]) -> socket.socket:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # "localhost" yields ::1 and 127.0.0.1: bind both, separately
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(_BACKLOG)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def preflight(self) -> None:
        """Bind ``[web] listen`` for a moment, as :meth:`start` will: an unknown host or an address that cannot
        be bound (in use, not local) is a ConfigError naming ``[web] listen``. Called by ``bspump check`` and
        before the application starts."""
        try:
            addresses = socket.getaddrinfo(self.host or None, self.port, type=socket.SOCK_STREAM,
                                           flags=socket.AI_PASSIVE)
            for family, kind, proto, _, address in dict.fromkeys(addresses):
                self._listen(family, kind, proto, address).close()
        except OSError as exc:
            raise self._unusable(exc) from None

    def _unusable(self, error: OSError) -> ConfigError:
        if isinstance(error, socket.gaierror):
            return self._config.error("listen", f"cannot resolve {self.host!r}: {error.strerror}")
        reason = os.strerror(error.errno).lower() if error.errno else str(error)
        return self._config.error("listen", f"cannot listen on {self.host}:{self.port}: {reason}")

    def _close_listeners(self) -> None:
        for sock in self._listeners:
            sock.close()
        self._listeners = []

    # -- connections -----------------------------------------------------------------------------------
    async def _accept(self, listener: socket.socket) -> None:
        """Accept for as long as the endpoint runs; a failed accept never ends the loop."""
        loop = asyncio.get_running_loop()
        pause = _ACCEPT_PAUSE[0]
        while True:
            try:
                sock, address = await loop.sock_accept(listener)
            except OSError as exc:
                self.stats.accept_failures += 1
                if exc.errno in _OUT_OF_DESCRIPTORS:
                    self._log.warning("descriptors", "web endpoint cannot accept a connection: %s "
                                      "(the process is out of file descriptors)", exc.strerror)
                    victim = self._evict()
                    if victim is not None:
                        await victim.closed()  # its descriptor is free now: accept again at once
                        continue
                else:
                    self._log.warning("accept", "web endpoint cannot accept a connection: %s", exc.strerror)
                await asyncio.sleep(pause)
                pause = min(pause * 2, _ACCEPT_PAUSE[1])
                continue
            pause = _ACCEPT_PAUSE[0]
            if self._connections.full:
                victim = self._evict()
                if victim is not None:
                    self._log.warning("full", "web endpoint holds its maximum of %d connections: closed the oldest "
                                      "(from %s, %s)", self._connections.limit, victim.peer,
                                      "answering" if victim.answering else "its request not complete")
            connection = OpenConnection(sock, _peer(address))
            self._connections.serve(connection, self._serve(connection))
            # sock_accept does not yield while connections are pending: without this, a flood would be
            # accepted in one go, evicting a prober whose request is already there before reading it,
            # and keeping the pipelines from running meanwhile.
            await asyncio.sleep(0)

    def _evict(self) -> OpenConnection | None:
        victim = self._connections.evict()
        if victim is not None:
            self.stats.evicted_connections += 1
        return victim

    async def _serve(self, connection: OpenConnection) -> None:
        """Read one request, answer it, and return (the table then closes the socket)."""
        try:
            request = await self._read_request(connection)
            if request is None:
                return
            connection.answering = True
            answer = self._answer(request)
            async with asyncio.timeout(self.write_timeout):
                await asyncio.get_running_loop().sock_sendall(connection.sock, answer)
        except OSError:  # includes TimeoutError: a client that resets or does not read gets nothing more
            pass
        except Exception as exc:  # a defect must not cost a traceback per request
            self._log_failure(f"web endpoint failed to serve {connection.peer}", exc)

    async def _read_request(self, connection: OpenConnection) -> Request | None:
        """The request, or ``None`` when there is nothing to answer (client gone, or answered with a 4xx)."""
        received = bytearray()
        try:
            async with asyncio.timeout(self.head_timeout):
                head = await read_head(connection.sock, received, self.max_head_bytes)
            return None if head is None else parse_head(head)
        except TimeoutError:
            if not received:  # an idle connection (e.g. a browser's preconnect): close it, nothing to report
                return None
            await self._reject(connection, RequestRejected(
                408, f"request head not complete within {self.head_timeout:g} s"))
        except RequestRejected as rejected:
            await self._reject(connection, rejected)
        return None

    async def _reject(self, connection: OpenConnection, rejected: RequestRejected) -> None:
        self.stats.rejected(rejected.status)
        self._log.warning(f"rejected {rejected.status}", "web endpoint answered %d to %s: %s",
                          rejected.status, connection.peer, rejected.reason)
        answer = format_response(rejected.status, "text/plain; charset=utf-8", f"{rejected.reason}\n".encode())
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(_LINGER_SECONDS):
                await loop.sock_sendall(connection.sock, answer)
                # Closing a socket with unread input resets the connection, and the reset can destroy the
                # answer before the client reads it: read (and drop) what is still coming, for a moment.
                connection.sock.shutdown(socket.SHUT_WR)
                drained = 0
                while drained < _LINGER_BYTES:
                    chunk = await loop.sock_recv(connection.sock, 65536)
                    if not chunk:
                        break
                    drained += len(chunk)
        except OSError:
            pass

    # -- routes ----------------------------------------------------------------------------------------
    def _answer(self, request: Request) -> bytes:
        head_only = request.method == "HEAD"
        if request.method not in ("GET", "HEAD"):
            return format_response(405, "text/plain", b"method not allowed\n")
        try:
            if request.path == "/metrics":
                return format_response(200, "text/plain; version=0.0.4; charset=utf-8", self.render_metrics(),
                                       head_only=head_only)
            if request.path in ("/health", "/ready"):
                status, payload = self.health() if request.path == "/health" else self.readiness()
                body = self.mask(orjson.dumps(payload).decode()).encode()
                return format_response(status, "application/json", body, head_only=head_only)
        except Exception as exc:
            self._log_failure(f"web endpoint failed to answer {request.path}", exc)
            return format_response(500, "text/plain", b"internal error; see the log\n", head_only=head_only)
        return format_response(404, "text/plain", b"not found; try /metrics, /health, /ready\n",
                               head_only=head_only)

    def render_metrics(self) -> bytes:
        """The ``/metrics`` body, masked; rendered again only when the last rendering is
        :attr:`metrics_max_age` seconds old."""
        now = time.monotonic()
        cached = self._metrics_cache
        if cached is not None and now - cached[0] < self.metrics_max_age:
            return cached[1]
        body = self.mask(generate_latest(self.registry).decode()).encode()
        self._metrics_cache = (now, body)
        return body

    def health(self) -> tuple[int, dict[str, object]]:
        """200 unless a pipeline failed."""
        failed = [p.id for p in self.app.pump_service.pipelines.values() if p.state is PipelineState.FAILED]
        return (503 if failed else 200), {"status": "failed" if failed else "ok", "failed_pipelines": failed}

    def readiness(self) -> tuple[int, dict[str, object]]:
        """200 when every connection is ready and every pipeline runs (backpressure does not count)."""
        service = self.app.pump_service
        waiting_connections = [c.id for c in service.connections.values() if not c.ready]
        not_running = {
            p.id: p.state.value if p.state is not PipelineState.RUNNING else sorted(p.throttles - {"in flight"})
            for p in service.pipelines.values()
            if p.state is not PipelineState.RUNNING or (p.throttles - {"in flight"})
        }
        ready = not waiting_connections and not not_running
        body = {"ready": ready, "connections_not_ready": waiting_connections, "pipelines_not_ready": not_running}
        return (200 if ready else 503), body

    def _log_failure(self, what: str, exc: Exception) -> None:
        written = self._log.error("failure", "%s: %s", what, self.mask(f"{type(exc).__name__}: {exc}"))
        if written and log.isEnabledFor(logging.DEBUG):  # the traceback only when asked for, and rate-limited too
            log.debug("%s", what, exc_info=exc)


def _peer(address: object) -> str:
    """``host:port`` of a client address (IPv4 or IPv6), for log lines."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)
