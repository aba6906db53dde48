"""What every configurable part of bspump shares: an ID, defaults, and its effective configuration."""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from .config import ComponentConfig
from .errors import describe_error
from .failures import ErrorKind, classify_error
from .metrics import Counters

if TYPE_CHECKING:
    from .application import BSPumpApplication
    from .connection import Connection
    from .pipeline import Pipeline

log = logging.getLogger("bspump.component")

T = TypeVar("T")


def merged_defaults(cls: type) -> dict[str, Any]:
    """``ConfigDefaults`` of ``cls`` and its bases, the subclass winning."""
    merged: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        merged.update(klass.__dict__.get("ConfigDefaults", {}))
    return merged


def declares_own_keys(cls: type) -> bool:
    """True if a class outside bspump's base classes declared ``ConfigDefaults``.

    Such a component has a schema, so unknown keys are errors; a component that declares nothing
    (like a quick custom connection reading ``self.Config.get("host")``) accepts any key.
    """
    return any(
        "ConfigDefaults" in klass.__dict__ and klass.__dict__.get("_bspump_base") is not True
        for klass in cls.__mro__
    )


def merged_required(cls: type) -> tuple[str, ...]:
    """``ConfigRequired`` of ``cls`` and its bases, in declaration order, without repeats."""
    names: dict[str, None] = {}
    for klass in reversed(cls.__mro__):
        names.update(dict.fromkeys(klass.__dict__.get("ConfigRequired", ())))
    return tuple(names)


def check_required(config: ComponentConfig, required: tuple[str, ...]) -> None:
    """Raise a ConfigError naming the first required key that is missing or empty."""
    for key in required:
        value = config.get(key)
        if value is None or (isinstance(value, str | list | tuple) and not value):
            raise config.missing(key)


def build_config(
    cls: type,
    app: BSPumpApplication,
    section_name: str,
    overrides: Mapping[str, Any] | None,
) -> ComponentConfig:
    """Effective configuration: class defaults < ``[section_name]`` of pipelines.conf < constructor ``config``;
    raises a ConfigError when a key of ``ConfigRequired`` is missing or empty."""
    section = app.config.section(section_name) if app.config is not None else None
    if overrides:
        app.secrets.add_mapping(overrides, f"[{section_name}]")
    config = ComponentConfig(
        merged_defaults(cls),
        section,
        overrides,
        label=section_name,
        strict=declares_own_keys(cls),
    )
    check_required(config, merged_required(cls))
    return config


class Component(abc.ABC):  # noqa: B024 -- its kinds (Source, Sink, ...) declare the abstract methods
    """A named, configurable part of a pipeline (source, processor, sink).

    Configuration is read from ``[pipeline:PipelineID:ComponentID]``; ``ComponentID`` defaults to the
    class name. ``self.Config`` holds the effective values typed by ``ConfigDefaults`` (class defaults <
    file section < constructor ``config``). Declarations a subclass may make, checked when it is built (and
    so by ``bspump check``), each failure naming ``file:line [section] key``:

    - ``ConfigDefaults``: every key the component takes, with its default (typed: ``Int``, ``Seconds``,
      ``Choice``... carry ranges and choices). Unknown keys in its section are errors.
    - ``ConfigRequired``: keys that must be set to a non-empty value.
    - ``ConnectionType``: the component needs a connection of this class. It is named by ``connection=``
      (or ``connection =`` in the section); when none is named, the connection whose ID is the class's name
      (``KafkaConnection``) is used if one was added, else the only connection of that class if there is
      exactly one. ``self.connection`` is then that connection.
    """

    _bspump_base: ClassVar[bool] = True
    ConfigDefaults: ClassVar[dict[str, Any]] = {}
    ConfigRequired: ClassVar[tuple[str, ...]] = ()
    ConnectionType: ClassVar[type[Connection] | None] = None

    def __init__(
        self,
        app: BSPumpApplication,
        pipeline: Pipeline,
        id: str | None = None,
        config: Mapping[str, Any] | None = None,
        connection: str | None = None,
    ) -> None:
        self.app = app
        self.pipeline: Pipeline = pipeline
        self.id = id or type(self).__name__
        pipeline_id = getattr(pipeline, "id", None)
        section = f"pipeline:{pipeline_id}:{self.id}" if pipeline_id else f"component:{self.id}"
        self.Config = build_config(type(self), app, section, config)
        self.counters = Counters()
        self.connections: list[Connection] = []
        self.connection: Connection | None = None
        name = connection or self.Config.get("connection")
        if name:
            self.connection = self.use_connection(str(name))
        elif self.ConnectionType is not None:
            self.connection = self._default_connection(self.ConnectionType)
        if self.ConnectionType is not None and not isinstance(self.connection, self.ConnectionType):
            raise self.Config.error("connection", f"{type(self).__name__} needs a {self.ConnectionType.__name__}; "
                                                  f"{self.connection!r} is not one")

    def preflight(self) -> None:
        """Verify what can be known without connecting: files exist, ports are valid and free.

        Called by ``bspump check`` and by the application before it starts anything (no connection is
        open, no lookup loaded, no pipeline started yet). Raise :class:`~bspump.config.ConfigError` via
        ``self.Config.error(key, message)`` so that the error names ``file:line [section] key``; the
        default checks nothing. Keep it quick and synchronous: it runs once, before the pipelines.
        """

    def _default_connection(self, wanted: type[Connection]) -> Connection:
        service = self.app.pump_service
        if wanted.__name__ in service.connections:
            return self.use_connection(wanted.__name__)
        # The seed's IDs are free ("ESConnection"): the only connection of the wanted type is unambiguous.
        candidates = sorted(cid for cid, c in service.connections.items() if isinstance(c, wanted))
        if len(candidates) == 1:
            return self.use_connection(candidates[0])
        known = ", ".join(sorted(service.connections)) or "none"
        several = f" ({', '.join(candidates)} are {wanted.__name__}s: name one)" if candidates else ""
        raise self.Config.error(
            "connection",
            f"{type(self).__name__} needs a {wanted.__name__}: name one with connection = ID "
            f"(or connection= in code); known connection IDs: {known}{several}")

    def use_connection(self, connection_id: str) -> Connection:
        """Resolve a connection by ID (fails now, listing the known IDs, if unknown) and depend on it.

        The pipeline pauses while any connection its components use is not ready.
        """
        connection = self.app.pump_service.locate_connection(connection_id, referrer=self.qualified_id)
        self.connections.append(connection)
        return connection

    def classify(self, error: BaseException) -> ErrorKind:
        """What kind of failure ``error`` (from this component's client) is: its connection decides (see
        :meth:`bspump.Connection.classify`); a component without one uses the standard library's table."""
        connection = self.connection
        return connection.classify(error) if connection is not None else classify_error(error)

    async def wait_connections_ready(self) -> None:
        """Return once every connection this component uses is ready (at once in the common case)."""
        for connection in self.connections:
            if not connection.ready:
                await connection.wait_ready()

    async def start_client(self, start: Callable[[], Awaitable[T]], what: str) -> T:
        """Run ``start()`` until it succeeds and return its result: for a client that a source or sink owns
        itself (a consumer, a producer, a cursor), started from its ``main`` or writer task, and for any
        attempt a source repeats until it succeeds (one run of a query, a read of a change stream).

        Each attempt waits until the component's connections are ready. A failure the connection classifies
        as ``LINK`` is reported to it (it reconnects while the pipeline pauses); ``LINK`` and ``TRANSIENT``
        failures are retried with the pipeline's retry backoff; a ``PERMANENT`` one is raised. ``start`` must
        release whatever it created before it raises. ``what`` names the attempt in log lines
        (``"starting the consumer"``: ``...: starting the consumer failed (...); retrying in 0.50s``).
        """
        backoff = self.pipeline.retry_backoff()
        while True:
            await self.wait_connections_ready()
            try:
                return await start()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                kind = self.classify(exc)
                if kind is ErrorKind.PERMANENT:
                    raise
                delay = backoff.next_delay()
                log.warning("%s: %s failed (%s); retrying in %.2fs",
                            self.qualified_id, what, describe_error(exc), delay)
                if kind is ErrorKind.LINK:
                    for connection in self.connections:
                        connection.report_failure(exc)
                await asyncio.sleep(delay)

    def gauges(self) -> Mapping[str, float]:
        """Current values this component reports besides its event counters (a source's lag, a sink's
        queue), by name. Read when metrics are collected, never on the hot path; none by default."""
        return {}

    @property
    def qualified_id(self) -> str:
        """``PipelineID.ComponentID``, the address used by ``PumpService.locate``."""
        pipeline_id = getattr(self.pipeline, "id", None)
        return f"{pipeline_id}.{self.id}" if pipeline_id else self.id

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.qualified_id}>"
