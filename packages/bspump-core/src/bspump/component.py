"""What every configurable part of bspump shares: an ID, defaults, and its effective configuration."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from .config import ComponentConfig
from .metrics import Counters

if TYPE_CHECKING:
    from .application import BSPumpApplication
    from .connection import Connection


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


def build_config(
    cls: type,
    app: BSPumpApplication,
    section_name: str,
    overrides: Mapping[str, Any] | None,
) -> ComponentConfig:
    """Effective configuration: class defaults < ``[section_name]`` of pipelines.conf < constructor ``config``."""
    section = app.config.section(section_name) if app.config is not None else None
    return ComponentConfig(
        merged_defaults(cls),
        section,
        overrides,
        label=section_name,
        strict=declares_own_keys(cls),
    )


class Component:
    """A named, configurable part of a pipeline (source, processor, sink).

    Configuration is read from ``[pipeline:PipelineID:ComponentID]``; ``ComponentID`` defaults to the
    class name. ``self.Config`` holds the effective values typed by ``ConfigDefaults``. ``connection``
    (or ``connection =`` in the section) names a connection added to the PumpService.
    """

    _bspump_base: ClassVar[bool] = True
    ConfigDefaults: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        app: BSPumpApplication,
        pipeline: Any,
        id: str | None = None,
        config: Mapping[str, Any] | None = None,
        connection: str | None = None,
    ) -> None:
        self.app = app
        self.pipeline = pipeline
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

    def use_connection(self, connection_id: str) -> Connection:
        """Resolve a connection by ID (fails now, listing the known IDs, if unknown) and depend on it.

        The pipeline pauses while any connection its components use is not ready.
        """
        connection = self.app.pump_service.locate_connection(connection_id, referrer=self.qualified_id)
        self.connections.append(connection)
        return connection

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
