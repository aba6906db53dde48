"""Named component types contributed by plugins, resolved from ``type = ...`` in pipelines.conf."""

from __future__ import annotations

import difflib
import importlib
import reprlib
from dataclasses import dataclass, field

from .errors import PluginError

KINDS = ("connection", "source", "processor", "sink", "lookup")


@dataclass
class TypeRegistry:
    """Maps ``plugin.Name`` to classes, per kind."""

    types: dict[str, dict[str, type]] = field(default_factory=lambda: {k: {} for k in KINDS})
    #: Plugins that are installed but whose types are missing, with the reason (a load error, a block).
    unavailable: dict[str, str] = field(default_factory=dict)

    def register(self, kind: str, plugin: str, cls: type, name: str | None = None) -> str:
        """Register ``cls`` as ``plugin.name``; returns the full name."""
        check_type(kind, cls, name)
        full = f"{plugin}.{name or cls.__name__}"
        existing = self.types[kind].get(full)
        if existing is not None and existing is not cls:
            raise PluginError(f"{kind} type {full!r} is already registered by {existing.__module__}")
        self.types[kind][full] = cls
        return full

    def names(self, kind: str) -> list[str]:
        """Every registered name of a kind."""
        return sorted(self.types[kind])

    def resolve(self, kind: str, name: str) -> type:
        """The class for ``name``: a registered ``plugin.Name``, a unique bare ``Name``, or ``module:Class``.

        Raises PluginError listing close matches and the installed names otherwise.
        """
        table = self.types[kind]
        if name in table:
            return table[name]
        if ":" in name:
            return _import_class(name)
        missing_plugin = self.missing_plugin(name)
        if missing_plugin:
            raise PluginError(f"unknown {kind} type {name!r}: {missing_plugin}")
        bare = [full for full in table if full.split(".", 1)[-1] == name]
        if len(bare) == 1:
            return table[bare[0]]
        if len(bare) > 1:
            raise PluginError(f"{kind} type {name!r} is ambiguous: {', '.join(sorted(bare))}; write the full name")
        close = difflib.get_close_matches(name, list(table), n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        known = ", ".join(sorted(table)) or "none"
        missing = ""
        plugin = self._plugin_of(name)
        if plugin and not self._loaded(plugin):
            missing = f"; a plugin may be missing: pip install bspump-{plugin}"
        raise PluginError(
            f"unknown {kind} type {name!r}{hint} (installed {kind} types: {known}{missing}; or write module:Class)"
        )

    def missing_plugin(self, name: str) -> str | None:
        """Why ``plugin.Name`` cannot resolve when its plugin is installed but not loaded; else ``None``."""
        plugin = self._plugin_of(name)
        if plugin not in self.unavailable:
            return None
        return f"plugin {plugin!r} is installed but {self.unavailable[plugin]}"

    def _plugin_of(self, name: str) -> str:
        """The plugin part of ``plugin.Name`` (plugin names may hold dots too); empty for a bare name."""
        for plugin in self.unavailable:
            if name.startswith(f"{plugin}."):
                return plugin
        return name.rpartition(".")[0]

    def _loaded(self, plugin: str) -> bool:
        prefix = f"{plugin}."
        return plugin == "core" or any(full.startswith(prefix) for table in self.types.values() for full in table)


def base_class(kind: str) -> type:
    """The class every type of ``kind`` derives from."""
    # Imported here: the component modules import much of the core, which imports this module.
    from .connection import Connection
    from .lookup import Lookup
    from .processor import Processor
    from .sink import Sink
    from .source import Source

    bases: dict[str, type] = {
        "connection": Connection, "source": Source, "processor": Processor, "sink": Sink, "lookup": Lookup
    }
    try:
        return bases[kind]
    except KeyError:
        raise PluginError(f"unknown kind {kind!r}; kinds are {', '.join(KINDS)}") from None


def check_type(kind: str, value: object, name: object = None) -> None:
    """Raise PluginError unless ``value`` is a class of ``kind`` and ``name`` a usable type name."""
    base = base_class(kind)
    if not isinstance(value, type):
        raise PluginError(f"{reprlib.repr(value)} ({type(value).__name__}) is not a class")
    if not issubclass(value, base):
        actual = [base_class(k).__name__ for k in KINDS if issubclass(value, base_class(k))]
        what = f"is a {actual[0]}, not a {base.__name__}" if actual else f"is not a {base.__name__}"
        raise PluginError(f"{value.__qualname__} {what}")
    if name is not None and not (isinstance(name, str) and name.isidentifier()):
        raise PluginError(f"{reprlib.repr(name)} is not a valid type name for {value.__qualname__} "
                          "(letters, digits and _)")


def _import_class(spec: str) -> type:
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PluginError(f"cannot import {module_name!r} for type {spec!r}: {exc}") from exc
    try:
        value = getattr(module, attribute)
    except AttributeError:
        raise PluginError(f"module {module_name!r} has no {attribute!r} (type {spec!r})") from None
    if not isinstance(value, type):
        raise PluginError(f"{spec!r} is not a class")
    return value
