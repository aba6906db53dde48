"""Plugin loading: entry points in the ``bspump`` group, called through pluggy, fault-isolated.

Each plugin is checked against the hook specs when it is registered: a hook bspump does not know (a typo such
as ``register_sink``), a hook function without ``@hookimpl``, a class registered through the wrong hook, or a
class or name registered twice fails that plugin. A plugin that fails to import or to register is recorded
with its error and skipped; the others load, and the registry says why the failed plugin's types are missing.
``BSPUMP_PLUGINS`` (comma-separated entry-point names) loads only those plugins; ``BSPUMP_PLUGINS=none``
loads none; ``BSPUMP_BLOCK_PLUGINS`` skips the named ones. bspump-core's own types (``core.*``) are
always available.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import logging
import os
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pluggy

from . import hookspecs
from .errors import PluginError
from .registry import TypeRegistry, check_type

if TYPE_CHECKING:
    from .application import BSPumpApplication
    from .hookspecs import Register

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


@dataclass
class _Registration:
    """One ``register(cls, name)`` call, kept until the plugin's hooks have all run."""

    kind: str
    name: str
    cls: type


class Plugins:
    """The plugins of one application: a pluggy manager plus the registry of named types.

    Every hook is called through pluggy, one plugin at a time and in pluggy's order, so ``tryfirst``,
    ``trylast`` and a plugin's hook wrappers apply to its implementations, and a failure is that plugin's own.
    """

    def __init__(self, *, load_entry_points: bool = True, environ: Mapping[str, str] | None = None) -> None:
        self.manager = pluggy.PluginManager("bspump")
        self.manager.add_hookspecs(hookspecs)
        self.registry = TypeRegistry()
        self.infos: list[PluginInfo] = []
        self._environ = os.environ if environ is None else environ
        self._hook_names = sorted(name for name, caller in vars(self.manager.hook).items() if caller.has_spec())
        self._add(BUILTIN[0], BUILTIN[1], lambda: importlib.import_module(BUILTIN[1]))
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
                self.registry.unavailable[ep.name] = (
                    f"blocked by {ENV_BLOCK}" if ep.name in block else f"not listed in {ENV_ALLOW}"
                )
                continue
            self._add(ep.name, ep.value, ep.load, distribution, version)

    def register(self, name: str, plugin: object) -> PluginInfo:
        """Register an already imported plugin object (a module or class with hook implementations)."""
        return self._add(name, getattr(plugin, "__name__", repr(plugin)), lambda: plugin)

    def extend_application(self, app: BSPumpApplication) -> None:
        """Let each loaded plugin extend the application, in pluggy's order; a failing plugin is logged and skipped."""
        for plugin in self._call_order("extend_application"):
            try:
                self._caller(plugin, "extend_application")(app=app)
            except Exception as exc:
                name = self.manager.get_name(plugin)
                log.error("plugin %r: extend_application failed: %s", name, _describe(exc))
                log.debug("plugin %r traceback:\n%s", name, "".join(traceback.format_exception(exc)))

    def failed(self) -> list[PluginInfo]:
        """Plugins that could not be loaded."""
        return [info for info in self.infos if info.status == "failed"]

    # -- loading one plugin ------------------------------------------------------------------------------
    def _add(
        self,
        name: str,
        value: str,
        load: Callable[[], object],
        distribution: str | None = None,
        version: str | None = None,
    ) -> PluginInfo:
        info = PluginInfo(name, value, distribution, version)
        self.infos.append(info)
        try:
            plugin = load()
        except Exception as exc:
            return self._failed(info, "import", exc)
        try:
            self._register(name, plugin)
            registrations = self._collect(name, plugin)
        except Exception as exc:
            if self.manager.get_plugin(name) is plugin:
                self.manager.unregister(name=name)
            return self._failed(info, "registration", exc)
        for entry in registrations:
            info.types.append(f"{entry.kind}:{self.registry.register(entry.kind, name, entry.cls, entry.name)}")
        return info

    def _register(self, name: str, plugin: object) -> None:
        """Register with pluggy, which checks arguments against the specs; then check the hook names."""
        if self.manager.has_plugin(name):
            raise PluginError(f"a plugin named {name!r} is already loaded")
        if self.manager.is_registered(plugin):
            raise PluginError(f"{plugin!r} is already loaded as plugin {self.manager.get_name(plugin)!r}")
        try:
            self.manager.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(_one_line(str(exc))) from exc
        callers = self.manager.get_hookcallers(plugin) or []
        problems = [*self._unknown_hooks(plugin, callers), *self._unmarked_hooks(plugin, callers)]
        if problems:
            raise PluginError("; ".join(problems))
        if not callers:
            raise PluginError(f"{plugin!r} has no @bspump.hookimpl function (does the entry point name the "
                              "plugin module?)")

    def _unknown_hooks(self, plugin: object, callers: list[pluggy.HookCaller]) -> Iterator[str]:
        # pluggy's check_pending() verifies every plugin at once; this is the same check for one plugin.
        for caller in callers:
            own = [impl for impl in caller.get_hookimpls() if impl.plugin is plugin]
            if not caller.has_spec() and not all(impl.optionalhook for impl in own):
                close = difflib.get_close_matches(caller.name, self._hook_names, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"hooks are {', '.join(self._hook_names)}"
                yield f"unknown hook {caller.name!r} ({hint})"

    def _unmarked_hooks(self, plugin: object, callers: list[pluggy.HookCaller]) -> Iterator[str]:
        # pluggy ignores a function without the marker; named like a hook, it is a hook that never runs.
        implemented = {caller.name for caller in callers}
        for hook_name in self._hook_names:
            if hook_name not in implemented and callable(getattr(plugin, hook_name, None)):
                yield f"{hook_name} is not marked @bspump.hookimpl, so it would never be called"

    def _collect(self, name: str, plugin: object) -> list[_Registration]:
        """Call this plugin's registration hooks; what they register is checked, and kept only if all succeed."""
        registrations: list[_Registration] = []
        refusals: list[PluginError] = []
        for hook_name, kind in _HOOKS.items():
            register = self._registrar(name, hook_name, kind, registrations, refusals)
            self._caller(plugin, hook_name)(register=register)
            if refusals:  # raised inside the plugin's hook; checked again in case the plugin swallowed it
                raise refusals[0]
        return registrations

    def _registrar(
        self, plugin: str, hook_name: str, kind: str, registrations: list[_Registration], refusals: list[PluginError]
    ) -> Register:
        def register(cls: type, name: str | None = None) -> None:
            try:
                check_type(kind, cls, name)
                registrations.append(_unique(_Registration(kind, name or cls.__name__, cls), plugin, registrations))
            except PluginError as exc:
                refusal = PluginError(f"plugin {plugin!r}: {hook_name}: {exc}")
                refusals.append(refusal)
                raise refusal from None

        return register

    def _failed(self, info: PluginInfo, phase: str, exc: BaseException) -> PluginInfo:
        info.status = "failed"
        info.error = f"{phase} failed: {_describe(exc)}"
        if not self.manager.has_plugin(info.name):  # not a second plugin under a loaded one's name
            self.registry.unavailable[info.name] = f"failed to load: {info.error}"
        log.warning("plugin %r (%s) skipped: %s", info.name, info.module, info.error)
        log.debug("plugin %r traceback:\n%s", info.name, "".join(traceback.format_exception(exc)))
        return info

    # -- calling hooks through pluggy ----------------------------------------------------------------------
    def _caller(self, plugin: object, hook_name: str) -> pluggy.HookCaller:
        """The hook as pluggy would call it, with only this plugin's implementations."""
        others = [other for other in self.manager.get_plugins() if other is not plugin]
        return self.manager.subset_hook_caller(hook_name, remove_plugins=others)

    def _call_order(self, hook_name: str) -> list[object]:
        """The plugins implementing a hook, in the order pluggy calls them (it calls the last impl first)."""
        order: list[object] = []
        for impl in reversed(getattr(self.manager.hook, hook_name).get_hookimpls()):
            if not (impl.wrapper or impl.hookwrapper) and all(impl.plugin is not seen for seen in order):
                order.append(impl.plugin)
        return order


def _unique(entry: _Registration, plugin: str, registrations: list[_Registration]) -> _Registration:
    """``entry``, unless this plugin already registered its class or its name for the same kind."""
    for earlier in registrations:
        if earlier.kind != entry.kind:
            continue
        if earlier.cls is entry.cls:
            names = "" if earlier.name == entry.name else f" (as {plugin}.{earlier.name} and {plugin}.{entry.name})"
            raise PluginError(f"{entry.cls.__qualname__} is registered twice{names}")
        if earlier.name == entry.name:
            raise PluginError(f"{earlier.cls.__qualname__} and {entry.cls.__qualname__} are both registered as "
                              f"{plugin}.{entry.name}")
    return entry


def _describe(exc: BaseException) -> str:
    """One line: bspump's own diagnostics as they are, anything else with its exception type."""
    detail = _one_line(str(exc))
    if isinstance(exc, PluginError):
        return detail
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def _names(value: str | None) -> set[str] | None:
    """Comma-separated names; ``None`` when unset or empty; ``none`` alone gives the empty set."""
    if value is None or not value.strip():
        return None
    return {part.strip() for part in value.split(",") if part.strip() and part.strip() != "none"}
