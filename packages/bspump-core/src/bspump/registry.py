"""Named component types contributed by plugins, resolved from ``type = ...`` in pipelines.conf."""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field

from .errors import PluginError

KINDS = ("connection", "source", "processor", "sink", "lookup")


@dataclass
class TypeRegistry:
    """Maps ``plugin.Name`` to classes, per kind."""

    types: dict[str, dict[str, type]] = field(default_factory=lambda: {k: {} for k in KINDS})

    def register(self, kind: str, plugin: str, cls: type, name: str | None = None) -> str:
        """Register ``cls`` as ``plugin.name``; returns the full name."""
        if kind not in self.types:
            raise PluginError(f"unknown kind {kind!r}; kinds are {', '.join(KINDS)}")
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
        bare = [full for full in table if full.split(".", 1)[-1] == name]
        if len(bare) == 1:
            return table[bare[0]]
        if len(bare) > 1:
            raise PluginError(f"{kind} type {name!r} is ambiguous: {', '.join(sorted(bare))}; write the full name")
        close = difflib.get_close_matches(name, list(table), n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        known = ", ".join(sorted(table)) or "none"
        prefix = name.split(".", 1)[0] if "." in name else ""
        missing = f"; a plugin may be missing: pip install bspump-{prefix}" if prefix and prefix != "core" else ""
        raise PluginError(
            f"unknown {kind} type {name!r}{hint} (installed {kind} types: {known}{missing}; or write module:Class)"
        )


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
