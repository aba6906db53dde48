"""The plugin contract: one hook per kind of thing a plugin can register.

Each ``register_*`` hook receives a :class:`Register`; a class registered through it becomes available as
``<plugin>.<name or class name>`` (``kafka.KafkaConnection``) for ``type = ...`` in pipelines.conf. Hooks run
once at start-up, never per event. A plugin fails to load when it defines a hook not listed here, defines one
without ``@hookimpl``, registers a class through the wrong hook, or registers a class or a name twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import pluggy

if TYPE_CHECKING:
    from .application import BSPumpApplication

hookspec = pluggy.HookspecMarker("bspump")
hookimpl = pluggy.HookimplMarker("bspump")


class Register(Protocol):
    """The ``register`` argument of the ``register_*`` hooks."""

    def __call__(self, cls: type, name: str | None = None) -> None:
        """Make ``cls`` available as ``<plugin>.<name>``; ``name`` defaults to the class name."""


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
