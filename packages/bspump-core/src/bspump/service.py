"""PumpService: the registry of an application's connections, lookups and pipelines."""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from .connection import Connection
from .errors import BSPumpError, DuplicateIdError, StartupError, UnknownConnectionError, UnknownIdError, describe_error
from .lookup import Lookup
from .pipeline import Pipeline

if TYPE_CHECKING:
    from .application import BSPumpApplication

log = logging.getLogger("bspump.service")


class PumpService:
    """Holds connections, lookups and pipelines by ID and runs them in the right order.

    Start: connections begin connecting, lookups load, pipelines start (each pauses until the
    connections it uses are ready). Stop: pipelines drain concurrently, then connections close.
    """

    name = "bspump.PumpService"

    def __init__(self, app: BSPumpApplication) -> None:
        self.app = app
        self.connections: dict[str, Connection] = {}
        self.lookups: dict[str, Lookup] = {}
        self.pipelines: dict[str, Pipeline] = {}

    # -- registration -----------------------------------------------------------------------------------
    def add_connection(self, connection: Connection) -> Connection:
        """Register a connection under its ID; sources and sinks then refer to it by that ID."""
        _check_new("connection", connection.id, self.connections)
        self.connections[connection.id] = connection
        return connection

    def add_lookup(self, lookup: Lookup) -> Lookup:
        """Register a lookup under its ID."""
        _check_new("lookup", lookup.id, self.lookups)
        self.lookups[lookup.id] = lookup
        return lookup

    def add_pipeline(self, pipeline: Pipeline) -> Pipeline:
        """Register a built pipeline; it starts with the application."""
        _check_new("pipeline", pipeline.id, self.pipelines)
        self.pipelines[pipeline.id] = pipeline
        if self.app.running:
            self.app.start_pipeline_soon(pipeline)
        return pipeline

    # -- look-up ----------------------------------------------------------------------------------------
    def locate_connection(self, connection_id: str, referrer: str | None = None) -> Connection:
        """The connection with this ID; the error lists the known IDs."""
        try:
            return self.connections[connection_id]
        except KeyError:
            raise UnknownConnectionError(connection_id, self.connections, referrer) from None

    def locate_lookup(self, lookup_id: str, referrer: str | None = None) -> Lookup:
        """The lookup with this ID; the error lists the known IDs."""
        try:
            return self.lookups[lookup_id]
        except KeyError:
            raise UnknownIdError("lookup", lookup_id, self.lookups, referrer) from None

    def locate(self, address: str) -> Any:
        """Find by address: ``PipelineID``, ``PipelineID.ComponentID`` (glob patterns allowed, e.g.
        ``"Events.*Source"``), a connection ID or a lookup ID. Returns ``None`` if nothing matches."""
        if address in self.pipelines:
            return self.pipelines[address]
        if address in self.connections:
            return self.connections[address]
        if address in self.lookups:
            return self.lookups[address]
        # IDs first: "*" matches dots, so "Kafka*" would otherwise return a component of a pipeline
        # "KafkaEvents" instead of the connection "KafkaConnection".
        for registry in (self.pipelines, self.connections, self.lookups):
            for key, value in registry.items():
                if fnmatch.fnmatchcase(key, address):
                    return value
        for pipeline in self.pipelines.values():
            for component in pipeline.components:
                if fnmatch.fnmatchcase(component.qualified_id, address):
                    return component
        return None

    # -- lifecycle --------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Open connections, load lookups, start pipelines.

        A lookup that fails to load or a pipeline that fails to start raises :class:`StartupError` naming
        its section; a :class:`~bspump.config.ConfigError` or a bspump error passes as it is.
        """
        for connection in self.connections.values():
            await connection.open()
        for lookup in self.lookups.values():
            await self._start_one(lookup.start(), f"lookup:{lookup.id}", f"lookup {lookup.id!r} failed to load")
        for pipeline in self.pipelines.values():
            await self._start_one(pipeline.start(), f"pipeline:{pipeline.id}",
                                  f"pipeline {pipeline.id!r} failed to start")

    async def _start_one(self, starting: Awaitable[None], section_name: str, failure: str) -> None:
        try:
            await starting
        except BSPumpError:  # ConfigError included: already located
            raise
        except Exception as exc:
            raise StartupError(f"{self._where(section_name)}: {failure}: {describe_error(exc)}") from exc

    def _where(self, section_name: str) -> str:
        section = self.app.config.section(section_name)
        return section.location() if section is not None else f"[{section_name}]"

    async def stop(self) -> None:
        """Drain every pipeline, then close connections and stop lookups."""
        await asyncio.gather(*(p.stop() for p in self.pipelines.values()))
        for connection in self.connections.values():
            await connection.close()
        for lookup in self.lookups.values():
            await lookup.stop()

    async def stop_now(self, timeout: float) -> None:
        """The forced stop: no draining; each connection gets ``timeout`` seconds to close, lookups stop.

        What was in flight stays unacknowledged (and its positions uncommitted, so it is read again).
        """
        await asyncio.gather(*(self._close_within(c, timeout) for c in self.connections.values()))
        for lookup in self.lookups.values():
            await lookup.stop()

    @staticmethod
    async def _close_within(connection: Connection, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await connection.close()
        except TimeoutError:
            log.warning("connection %r: not closed within %.1fs of the forced stop; abandoned", connection.id,
                        timeout)
        except Exception as exc:
            log.warning("connection %r: closing at the forced stop failed: %s", connection.id, describe_error(exc))

    def all_finished(self) -> bool:
        """True when there are pipelines and every one has stopped."""
        return bool(self.pipelines) and all(p.finished for p in self.pipelines.values())


def _check_new(kind: str, item_id: str, registry: dict[str, Any]) -> None:
    if item_id in registry:
        raise DuplicateIdError(f"a {kind} with ID {item_id!r} is already registered; IDs must be unique")
