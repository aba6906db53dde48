"""The plugin contract: one hook per kind of thing a plugin can register.

Each ``register_*`` hook receives ``register(cls, name=None)``; the type becomes available as
``<plugin>.<name or class name>`` (``kafka.KafkaConnection``) for ``type = ...`` in pipelines.conf.
Hooks run once at start-up, never per event.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .application import BSPumpApplication

hookspec = pluggy.HookspecMarker("bspump")
hookimpl = pluggy.HookimplMarker("bspump")

Register = Callable[..., Any]


@hookspec
def register_connections(register: Register) -> None:
    """Register Connection subclasses."""


@hookspec
def register_sources(register: Register) -> None:
    """Register Source subclasses."""


@hookspec
def register_processors(register: Register) -> None:
    """Register Processor and Generator subclasses."""


@hookspec
def register_sinks(register: Register) -> None:
    """Register Sink subclasses."""


@hookspec
def register_lookups(register: Register) -> None:
    """Register Lookup subclasses."""


@hookspec
def extend_application(app: BSPumpApplication) -> None:
    """Extend an application once it is assembled (web routes, metrics, services)."""
