"""Plugin loading: entry points in the ``bspump`` group, registered through pluggy, fault-isolated.

A plugin that fails to import or to register is recorded with its error and skipped; the others load.
``BSPUMP_PLUGINS`` (comma-separated entry-point names) loads only those plugins; ``BSPUMP_PLUGINS=none``
loads none; ``BSPUMP_BLOCK_PLUGINS`` skips the named ones. bspump-core's own types (``core.*``) are
always available.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

from . import hookspecs
from .registry import TypeRegistry

if TYPE_CHECKING:
    from .application import BSPumpApplication

log = logging.getLogger("bspump.plugins")

ENTRY_POINT_GROUP = "bspump"
ENV_ALLOW = "BSPUMP_PLUGINS"
ENV_BLOCK = "BSPUMP_BLOCK_PLUGINS"
BUILTIN = ("core", "bspump.embedded.plugin")

_HOOKS = {
    "register_connections": "connection",
    "register_sources": "source",
    "register_processors": "processor",
    "register_sinks": "sink",
    "register_lookups": "lookup",
}


@dataclass
class PluginInfo:
    """What ``bspump plugins`` reports for one plugin."""

    name: str
    module: str
    distribution: str | None = None
    version: str | None = None
    status: str = "loaded"  # loaded | failed | blocked
    types: list[str] = field(default_factory=list)
    error: str | None = None


class Plugins:
    """The plugins of one application: a pluggy manager plus the registry of named types."""

    def __init__(self, *, load_entry_points: bool = True, environ: Mapping[str, str] | None = None) -> None:
        self.manager = pluggy.PluginManager("bspump")
        self.manager.add_hookspecs(hookspecs)
        self.registry = TypeRegistry()
        self.infos: list[PluginInfo] = []
        self._environ = os.environ if environ is None else environ
        self._add(BUILTIN[0], BUILTIN[1], importlib.import_module)
        if load_entry_points:
            self.load_entry_points()

    def load_entry_points(self) -> None:
        """Load every allowed plugin of the ``bspump`` entry-point group."""
        allow = _names(self._environ.get(ENV_ALLOW))
        block = _names(self._environ.get(ENV_BLOCK)) or set()
        seen = {info.name for info in self.infos}
        for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if ep.name in seen:
                continue
            seen.add(ep.name)
            dist = ep.dist
            distribution, version = (dist.name, dist.version) if dist else (None, None)
            if (allow is not None and ep.name not in allow) or ep.name in block:
                self.infos.append(PluginInfo(ep.name, ep.value, distribution, version, status="blocked"))
                continue
            self._add(ep.name, ep.value, lambda _value, ep=ep: ep.load(), distribution, version)

    def register(self, name: str, plugin: Any) -> PluginInfo:
        """Register an already imported plugin object (a module or class with hook implementations)."""
        return self._add(name, getattr(plugin, "__name__", repr(plugin)), lambda _value: plugin)

    def _add(
        self, name: str, value: str, load: Any, distribution: str | None = None, version: str | None = None
    ) -> PluginInfo:
        info = PluginInfo(name, value, distribution, version)
        self.infos.append(info)
        try:
            plugin = load(value)
            self.manager.register(plugin, name=name)
        except Exception as exc:
            return self._failed(info, "import", exc)
        try:
            self._collect(info, plugin)
        except Exception as exc:
            self.manager.unregister(plugin)
            return self._failed(info, "registration", exc)
        return info

    def _collect(self, info: PluginInfo, plugin: ModuleType | Any) -> None:
        # Call this plugin's implementations alone, so one plugin's failure cannot hide another's types.
        staged: list[tuple[str, type, str | None]] = []
        for hook_name, kind in _HOOKS.items():
            for impl in getattr(self.manager.hook, hook_name).get_hookimpls():
                if impl.plugin is plugin:

                    def register(cls: type, name: str | None = None, _kind: str = kind) -> None:
                        staged.append((_kind, cls, name))

                    impl.function(register=register)
        for kind, cls, type_name in staged:
            info.types.append(f"{kind}:{self.registry.register(kind, info.name, cls, type_name)}")

    def _failed(self, info: PluginInfo, phase: str, exc: BaseException) -> PluginInfo:
        info.status = "failed"
        info.error = f"{phase} failed: {type(exc).__name__}: {exc}"
        log.warning("plugin %r (%s) skipped: %s", info.name, info.module, info.error)
        log.debug("plugin %r traceback:\n%s", info.name, "".join(traceback.format_exception(exc)))
        return info

    def extend_application(self, app: BSPumpApplication) -> None:
        """Let each loaded plugin extend the application; a failing plugin is logged and skipped."""
        for impl in self.manager.hook.extend_application.get_hookimpls():
            try:
                impl.function(app=app)
            except Exception as exc:
                log.error("plugin %r: extend_application failed: %s: %s", impl.plugin_name, type(exc).__name__, exc)

    def failed(self) -> list[PluginInfo]:
        """Plugins that could not be loaded."""
        return [info for info in self.infos if info.status == "failed"]


def _names(value: str | None) -> set[str] | None:
    """Comma-separated names; ``None`` when unset or empty; ``none`` alone gives the empty set."""
    if value is None or not value.strip():
        return None
    return {part.strip() for part in value.split(",") if part.strip() and part.strip() != "none"}
