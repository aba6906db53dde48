"""``bspump new-plugin NAME``: writes a plugin distribution, ``bspump-NAME``, to start a connector from.

What is written is a complete project: ``pyproject.toml`` (hatchling, the entry point ``NAME`` in the group
``bspump``), the import package ``bspump_NAME`` with a connection, a source, a sink, a checkpoint store and the
plugin module, tests that run bspump's conformance kit, an example configuration, a README and a changelog.
Its sample connector is real and needs no server (SQLite from the standard library), so the generated tests
pass as they are; an author replaces the SQLite calls with a client of their own.

The files come from ``files/`` beside this module, which mirrors the distribution: ``src/package`` becomes
``src/bspump_NAME``, ``gitignore`` becomes ``.gitignore``, and the ``.tmpl`` suffix is dropped. In their text,
``{{name}}`` (``my_store``), ``{{Name}}`` (``MyStore``, the prefix of the class names), ``{{package}}``
(``bspump_my_store``), ``{{distribution}}`` (``bspump-my-store``), ``{{core_version}}`` and ``{{core_next}}``
(the first core release that may break the plugin) are replaced.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path, PurePosixPath
from typing import Final

from .._missing import KNOWN_CONNECTORS
from ..errors import BSPumpError
from ..version import __version__

__all__ = ["PluginNames", "TemplateError", "command_new_plugin", "new_plugin", "plugin_names", "render"]

_NAME: Final = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
_PLACEHOLDER: Final = re.compile(r"\{\{(\w+)\}\}")
MAX_NAME_LENGTH: Final = 24
SUFFIX: Final = ".tmpl"
#: Names a new plugin may not take: each is the entry point of a plugin of the bspump project itself.
RESERVED_NAMES: Final = frozenset({"core", *KNOWN_CONNECTORS})


class TemplateError(BSPumpError):
    """A plugin could not be generated: an unusable name, or a folder that is already there."""


@dataclass(frozen=True)
class PluginNames:
    """The names of one plugin, all derived from ``name``."""

    #: The entry point, and the prefix of its type names in pipelines.conf (``my_store.MyStoreSink``).
    name: str
    #: The prefix of its class names (``MyStoreConnection``).
    class_prefix: str
    #: The import package (``bspump_my_store``).
    package: str
    #: The distribution and the folder written (``bspump-my-store``).
    distribution: str

    def placeholders(self) -> dict[str, str]:
        """What each ``{{placeholder}}`` of the template files stands for."""
        return {
            "name": self.name,
            "Name": self.class_prefix,
            "package": self.package,
            "distribution": self.distribution,
            "core_version": __version__.split("+")[0],  # a requirement cannot name a local version
            "core_next": next_breaking(__version__),
        }


def next_breaking(version: str) -> str:
    """The first core release that may break a plugin written for ``version``: the next minor release while the
    core is at 0.x (``0.1.3`` -> ``0.2``), the next major release after (``1.4.0`` -> ``2``)."""
    major, minor = (int(part) for part in [*re.findall(r"\d+", version.split("+")[0]), "0", "0"][:2])
    return f"0.{minor + 1}" if major == 0 else str(major + 1)


def plugin_names(name: str) -> PluginNames:
    """The names derived from ``name``; raises :class:`TemplateError` saying what is wrong with it."""
    if not _NAME.fullmatch(name):
        raise TemplateError(f"{name!r} is not a usable plugin name: use lowercase letters, digits and single "
                            "underscores, starting with a letter (e.g. sqlite or my_store)")
    if len(name) > MAX_NAME_LENGTH:
        raise TemplateError(f"plugin name {name[:20]}... is longer than {MAX_NAME_LENGTH} characters")
    if name in RESERVED_NAMES:
        raise TemplateError(f"plugin name {name!r} is taken by the bspump project's own "
                            f"{'bspump-core' if name == 'core' else KNOWN_CONNECTORS[name]}; choose another")
    return PluginNames(
        name=name,
        class_prefix="".join(part.capitalize() for part in name.split("_")),
        package=f"bspump_{name}",
        distribution=f"bspump-{name.replace('_', '-')}",
    )


def render(names: PluginNames) -> dict[PurePosixPath, str]:
    """Every file of the plugin: its path inside the distribution's folder, and its text."""
    values = names.placeholders()

    def substitute(match: re.Match[str]) -> str:
        return values[match.group(1)]  # a KeyError here is a mistake in the template files

    rendered: dict[PurePosixPath, str] = {}
    for relative, source in _template_files(resources.files(__name__) / "files", PurePosixPath()):
        rendered[_output_path(relative, names)] = _PLACEHOLDER.sub(substitute, source.read_text(encoding="utf-8"))
    return rendered


def _template_files(folder: Traversable, relative: PurePosixPath) -> list[tuple[PurePosixPath, Traversable]]:
    found: list[tuple[PurePosixPath, Traversable]] = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.is_dir():
            found += _template_files(entry, relative / entry.name)
        elif entry.name.endswith(SUFFIX):
            found.append((relative / entry.name, entry))
    return found


def _output_path(relative: PurePosixPath, names: PluginNames) -> PurePosixPath:
    parts = list(relative.parts)
    parts[-1] = parts[-1].removesuffix(SUFFIX)
    if parts[-1] == "gitignore":
        parts[-1] = ".gitignore"  # a dot file in package data is easily lost by packaging tools
    if parts[:2] == ["src", "package"]:
        parts[1] = names.package
    return PurePosixPath(*parts)


def new_plugin(name: str, directory: str | os.PathLike[str] = ".") -> Path:
    """Write the distribution of plugin ``name`` into ``directory`` (created if missing) and return its folder.

    Refuses, writing nothing, when the name is unusable or the folder ``bspump-NAME`` is already there. Raises
    :class:`TemplateError`.
    """
    names = plugin_names(name)
    files = render(names)
    parent = Path(directory)
    target = parent / names.distribution
    if parent.exists() and not parent.is_dir():
        raise TemplateError(f"{parent} is not a folder; nothing was written")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        target.mkdir()
    except FileExistsError:
        raise TemplateError(f"{target} already exists; nothing was written (remove it, or write elsewhere with "
                            "--directory)") from None
    except OSError as exc:
        raise TemplateError(f"cannot create {target}: {exc.strerror}") from None
    try:
        for relative, text in files.items():
            path = target.joinpath(*relative.parts)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    except OSError as exc:
        shutil.rmtree(target, ignore_errors=True)  # no half-written plugin left behind
        raise TemplateError(f"cannot write {exc.filename or target}: {exc.strerror}") from None
    return target


def command_new_plugin(args: argparse.Namespace) -> int:
    """``bspump new-plugin NAME [--directory DIR]``: write the plugin and say what to do next."""
    target = new_plugin(args.name, args.directory)
    names = plugin_names(args.name)
    types = ", ".join(f"{names.name}.{names.class_prefix}{kind}" for kind in ("Connection", "Source", "Sink"))
    print(f"created {target}: distribution {names.distribution}, import package {names.package}, "
          f"entry point {names.name} ({types})")
    print("next:")
    print(f"  cd {target}")
    print("  pip install -e '.[test]'")
    print("  pytest            # its tests, and bspump's conformance kit")
    print(f"  bspump plugins    # lists {names.name} with its types")
    return 0
