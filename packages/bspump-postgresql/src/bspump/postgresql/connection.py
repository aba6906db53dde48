"""PostgreSQLConnection: one asyncpg pool shared by every source, sink and lookup that names the connection."""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import asyncpg

from bspump import Connection, ErrorKind
from bspump.config import Choice, Int, Seconds
from bspump.failures import classify_error

from .codecs import install_codecs
from .errors import classify_postgres_error

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


async def reset_if_dirty(connection: asyncpg.Connection) -> None:
    """Called by the pool when a connection comes back. asyncpg's default sends a reset query (``RESET ALL``,
    ``UNLISTEN *``...) every time: a round trip per batch. The components of this package leave a connection
    clean (transactions and cursors closed by their blocks, listeners removed), so only a connection left inside
    a transaction (an operation cancelled half-way) gets the full reset."""
    if connection.is_in_transaction():
        await connection.reset()


class PostgreSQLConnection(Connection):
    """A pool of asyncpg connections to one PostgreSQL database.

    Configuration (``[connection:ID]``):

    - ``host``, ``port``, ``database``, ``user``, ``password``: where and as whom to connect. An empty value
      leaves the setting to asyncpg, which reads the ``PG*`` environment variables (``PGHOST``, ``PGUSER``...)
      and then libpq's defaults.
    - ``dsn``: a ``postgresql://`` URL; the keys above, when set, override its parts.
    - ``pool_min`` / ``pool_max``: connections kept open / opened at most. Every component of the connection
      shares the pool; a CDC or LISTEN source holds one connection while it runs.
    - ``sslmode``: ``disable``, ``allow``, ``prefer`` (default), ``require``, ``verify-ca`` or ``verify-full``,
      as in libpq; ``sslrootcert`` is the CA bundle the server certificate is verified against (``verify-ca``,
      ``verify-full``), ``sslcert`` and ``sslkey`` a client certificate and its key (files).
    - ``statement_timeout``: the server cancels a statement running longer (0: no limit).
    - ``application_name``: shown in ``pg_stat_activity``.
    - ``server_settings``: further session settings, ``name=value`` pairs separated by commas
      (``search_path=app,public, work_mem=64MB``).

    Errors of the server or of asyncpg are classified (:meth:`classify`): a serialization failure, a
    deadlock, a lock or statement timeout and a lack of resources are transient; a lost connection, a server
    shutting down or refusing connections is a link failure; constraint violations, type and syntax errors
    are permanent (the event is at fault).
    """

    ConfigDefaults: ClassVar[dict[str, Any]] = {
        "host": "",
        "port": Int(5432, min=1, max=65535),
        "database": "",
        "user": "",
        "password": "",
        "dsn": "",
        "pool_min": Int(1, min=0, max=1000),
        "pool_max": Int(10, min=1, max=1000),
        "sslmode": Choice("prefer", SSL_MODES),
        "sslrootcert": "",
        "sslcert": "",
        "sslkey": "",
        "statement_timeout": Seconds(0.0, min=0.0),
        "application_name": "bspump",
        "server_settings": "",
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pool: asyncpg.Pool | None = None
        self._settings = self._server_settings()

    # -- configuration ------------------------------------------------------------------------------------------
    def _server_settings(self) -> dict[str, str]:
        settings: dict[str, str] = {}
        text = str(self.Config.get("server_settings") or "")
        for item in (part.strip() for part in text.replace("\n", ",").split(",")):
            if not item:
                continue
            name, equals, value = item.partition("=")
            if not equals or not name.strip():
                raise self.Config.error("server_settings", f"expected name=value pairs separated by commas, "
                                                           f"got {item!r}")
            settings[name.strip()] = value.strip()
        application = str(self.Config.get("application_name") or "")
        if application:
            settings.setdefault("application_name", application)
        timeout = self.Config.getseconds("statement_timeout")
        if timeout > 0:
            settings.setdefault("statement_timeout", str(max(1, round(timeout * 1000))))
        return settings

    def _ssl(self) -> ssl.SSLContext | str | bool | None:
        """What asyncpg's ``ssl`` argument gets: a mode name, or a context when certificates are configured."""
        mode = self.Config.getchoice("sslmode")
        root = self.Config.getpath("sslrootcert")
        cert = self.Config.getpath("sslcert")
        key = self.Config.getpath("sslkey")
        if mode == "disable":
            return False
        if not (root or cert):
            return mode
        if mode in ("verify-ca", "verify-full"):
            context = ssl.create_default_context(cafile=root or None)
            context.check_hostname = mode == "verify-full"
        else:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if cert:
            context.load_cert_chain(cert, key or None)
        return context

    def preflight(self) -> None:
        """Certificate files must exist, and a ``verify-*`` mode with certificates needs ``sslrootcert``."""
        for key in ("sslrootcert", "sslcert", "sslkey"):
            path = self.Config.getpath(key)
            if path and not os.path.isfile(path):
                raise self.Config.error(key, f"no such file: {path}")
        if self.Config.get("sslkey") and not self.Config.get("sslcert"):
            raise self.Config.error("sslkey", "a client key needs its certificate in sslcert")
        if self.Config.getint("pool_min") > self.Config.getint("pool_max"):
            raise self.Config.error("pool_min", f"must not exceed pool_max ({self.Config.getint('pool_max')})")

    def connect_arguments(self) -> dict[str, Any]:
        """The keyword arguments of ``asyncpg.create_pool`` (without the pool sizes), from the configuration."""
        arguments: dict[str, Any] = {}
        dsn = str(self.Config.get("dsn") or "")
        if dsn:
            arguments["dsn"] = dsn
        for key in ("host", "database", "user", "password"):
            value = self.Config.get(key)
            if value:
                arguments[key] = str(value)
        if self.Config.origin("port") != "default" or not dsn:
            arguments["port"] = self.Config.getint("port")
        arguments["ssl"] = self._ssl()
        arguments["server_settings"] = dict(self._settings)
        return arguments

    # -- lifecycle ------------------------------------------------------------------------------------------------
    async def connect(self) -> None:
        """Open the pool and check it answers; called by the base class at start and after each failure."""
        pool = await asyncpg.create_pool(
            min_size=self.Config.getint("pool_min"),
            max_size=self.Config.getint("pool_max"),
            init=install_codecs,
            reset=reset_if_dirty,
            **self.connect_arguments(),
        )
        try:
            await pool.fetchval("SELECT 1")
        except BaseException:
            pool.terminate()
            raise
        self.pool = pool

    async def disconnect(self) -> None:
        """Close the pool; connections still in use are terminated after a short grace period."""
        pool, self.pool = self.pool, None
        if pool is None:
            return
        try:
            async with asyncio.timeout(5.0):
                await pool.close()
        except TimeoutError:
            pool.terminate()

    # -- use ------------------------------------------------------------------------------------------------------
    def get_pool(self) -> asyncpg.Pool:
        """The pool; raises ``ConnectionError`` (a link failure) while the connection is not ready."""
        pool = self.pool
        if pool is None or not self.ready:
            raise ConnectionError(f"PostgreSQL connection {self.id!r} is not ready")
        return pool

    @asynccontextmanager
    async def session(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection of the pool for the duration of the block (``async with connection.session() as c``)."""
        async with self.get_pool().acquire() as connection:
            yield connection

    def classify(self, error: BaseException) -> ErrorKind:
        """PostgreSQL's error classes mapped to the framework's kinds (see the class documentation)."""
        kind = classify_postgres_error(error)
        return kind if kind is not None else classify_error(error)
