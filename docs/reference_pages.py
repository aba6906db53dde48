"""Connector reference pages checked against the code.

A package in ``packages/`` registers its classes through the ``bspump`` entry points declared in its
``pyproject.toml``; its page is ``docs/connectors/NAME.rst`` (NAME: the distribution name without
``bspump-``). The page has one section per registered class, titled with the class name, holding a
``list-table`` with the columns Key | Type | Default | Meaning and one row per key of the class's
``ConfigDefaults`` (inherited ones included), the key written ````key````.

``test_reference_pages.py`` runs these checks for every package; run this file to print the tables of a
package as the code declares them (a starting point for a new page, the Meaning column left to write)::

    python docs/reference_pages.py bspump-kafka
"""

from __future__ import annotations

import importlib
import sys
import tomllib
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ROOT / "packages"
PAGES = ROOT / "docs" / "connectors"
CORE = "bspump-core"
HEADER = ["Key", "Type", "Default", "Meaning"]


@dataclass
class Package:
    """One distribution of ``packages/`` and the entry points it declares in the ``bspump`` group."""

    folder: Path
    distribution: str
    entry_points: dict[str, str]

    @property
    def name(self) -> str:
        """``kafka`` for ``bspump-kafka``: the page is ``docs/connectors/<name>.rst``."""
        return self.distribution.removeprefix("bspump-")

    @property
    def page(self) -> Path:
        return PAGES / f"{self.name}.rst"

    @property
    def is_connector(self) -> bool:
        """Every package but the core is a connector package, and must have a page."""
        return self.distribution != CORE


def packages() -> list[Package]:
    """Every package under ``packages/`` (a folder holding a ``pyproject.toml``), by name."""
    found = []
    for pyproject in sorted(PACKAGES.glob("*/pyproject.toml")):
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
        entry_points = dict(project.get("entry-points", {}).get("bspump", {}))
        found.append(Package(pyproject.parent, project["name"], entry_points))
    return found


def registered_classes(package: Package) -> dict[str, type]:
    """The classes the package's plugins register, by class name, loaded the way bspump loads plugins.

    Raises ``RuntimeError`` when a plugin fails to load (its error says why).
    """
    from bspump.plugins import Plugins

    plugins = Plugins(load_entry_points=False, environ={})
    classes: dict[str, type] = {}
    for plugin_name, module_name in package.entry_points.items():
        info = next((i for i in plugins.infos if i.name == plugin_name), None)
        if info is None:  # the core's own plugin is loaded by Plugins itself
            info = plugins.register(plugin_name, importlib.import_module(module_name))
        if info.status != "loaded":
            raise RuntimeError(f"{package.distribution}: plugin {plugin_name!r} did not load: {info.error}")
        for entry in info.types:
            kind, full_name = entry.split(":", 1)
            cls = plugins.registry.types[kind][full_name]
            classes[cls.__name__] = cls
    return classes


def declared_keys(cls: type) -> dict[str, Any]:
    """Every key of ``cls``'s ``ConfigDefaults``, its bases' included, with its default."""
    from bspump.component import merged_defaults

    return {key.lower(): value for key, value in merged_defaults(cls).items()}


@dataclass
class Section:
    """A section of a page titled with a class name: the keys its tables list, and format problems."""

    title: str
    keys: list[str] = field(default_factory=list)
    #: The Default cell of each key's row, as text.
    defaults: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def page_sections(page: Path, classes: Collection[str] = ()) -> dict[str, Section]:
    """The sections of ``page`` by title, each with the keys in the first column of its list-tables.

    A table belongs to the nearest enclosing section titled with one of ``classes`` (so a class's section may
    split its keys over subsections, "TLS" for instance), else to its own section.
    """
    from docutils import nodes
    from docutils.core import publish_doctree

    # Sphinx-only roles and directives (:doc:, toctree) are not docutils' business here: stay quiet about them.
    tree = publish_doctree(page.read_text(encoding="utf-8"), source_path=str(page),
                           settings_overrides={"report_level": 5, "halt_level": 5, "file_insertion_enabled": False})
    sections: dict[str, Section] = {}
    for node in tree.findall(nodes.section):
        title = _title(node)
        sections.setdefault(title, Section(title))
    for table in tree.findall(nodes.table):
        enclosing = [node for node in _ancestors(table) if isinstance(node, nodes.section)]
        if not enclosing:
            continue
        owner = next((node for node in enclosing if _title(node) in classes), enclosing[0])
        _read_table(table, sections[_title(owner)])
    return sections


def _title(section: Any) -> str:
    from docutils import nodes

    return str(section.next_node(nodes.title).astext()).strip().strip("`")


def _ancestors(node: Any) -> Iterator[Any]:
    parent = node.parent
    while parent is not None:
        yield parent
        parent = parent.parent


def _read_table(table: Any, section: Section) -> None:
    from docutils import nodes

    head = table.next_node(nodes.thead)
    header = [entry.astext().strip() for entry in head.findall(nodes.entry)] if head is not None else []
    if header != HEADER:
        section.problems.append(f"a table whose header is {header or 'missing'} instead of {' | '.join(HEADER)}")
        return
    body = table.next_node(nodes.tbody)
    for row in body.findall(nodes.row) if body is not None else []:
        first = row.next_node(nodes.entry)
        literal = first.next_node(nodes.literal) if first is not None else None
        text = first.astext().strip() if first is not None else ""
        if literal is None or literal.astext().strip() != text:
            section.problems.append(f"a row whose Key cell {text!r} is not written ``key``")
            continue
        section.keys.append(text.lower())
        cells = list(row.findall(nodes.entry))
        section.defaults[text.lower()] = cells[2].astext().strip() if len(cells) > 2 else ""


def check_package(package: Package) -> list[str]:
    """Every way the package's page disagrees with its code, one line each (empty: the page is right)."""
    from bspump.config import RESERVED_KEYS

    page = package.page.relative_to(ROOT)
    if not package.page.is_file():
        return [f"{package.distribution} has no reference page: write {page} (python docs/reference_pages.py "
                f"{package.distribution} prints its tables)"] if package.is_connector else []
    classes = registered_classes(package)
    sections = page_sections(package.page, classes)
    problems: list[str] = []
    if not classes:
        problems.append(f"{package.distribution} registers no class through its entry points, yet has {page}")
    for name, cls in sorted(classes.items()):
        section = sections.get(name)
        if section is None:
            problems.append(f"{page}: no section titled {name} (a class {package.distribution} registers)")
            continue
        problems.extend(f"{page}, section {name}: {problem}" for problem in section.problems)
        declared = declared_keys(cls)
        for key in declared:
            if key not in section.keys:
                problems.append(f"key {key!r} of {name} is missing from {page} (section {name})")
        for key in section.keys:
            if key not in declared and key not in RESERVED_KEYS:
                problems.append(f"{page}, section {name}: key {key!r} is not a key of {name} "
                                f"(its keys: {', '.join(declared) or 'none'})")
        for key, default in declared.items():
            written = section.defaults.get(key)
            if written is not None and default_disagrees(default, written):
                problems.append(f"{page}, section {name}: the default of {key!r} is {plain(default)!r} in the code "
                                f"but {written!r} on the page")
        repeated = sorted({key for key in section.keys if section.keys.count(key) > 1})
        if repeated:
            problems.append(f"{page}, section {name}: keys listed twice: {', '.join(repeated)}")
    return problems


def plain(default: Any) -> Any:
    """A default as the configuration holds it (an ``Int(5, min=0)`` is 5)."""
    value = getattr(default, "plain", None)
    return value() if callable(value) else default


def default_disagrees(default: Any, written: str) -> bool:
    """Whether the page's Default cell states another value than the code's default.

    Only a cell that reads as a value of the key's type can disagree (``30s`` or ``30`` for a duration,
    ``true``, a number, one of the choices); prose (``1 MiB``, ``the pipeline ID``) is left to the reader.
    """
    from bspump.config import Choice, Seconds
    from bspump.config.coerce import parse_bool
    from bspump.config.typed import parse_seconds

    text = written.strip().strip("`").strip()
    if isinstance(default, Seconds):
        try:
            return abs(parse_seconds(text) - float(default)) > 1e-9
        except ValueError:
            return False
    if isinstance(default, bool):
        try:
            return parse_bool(text) is not default
        except ValueError:
            return False
    if isinstance(default, int | float) and not isinstance(default, Choice):
        try:
            return float(text.replace(",", "").replace("_", "")) != float(default)
        except ValueError:
            return False
    if isinstance(default, Choice):
        return text.lower() in {c.lower() for c in default.choices} and text.lower() != str(default).lower()
    return False


# -- printing a page's tables from the code -------------------------------------------------------------------
def type_text(default: Any) -> str:
    """The Type column for a default, in the words the pages use."""
    from bspump.config import Choice, Float, Int, Seconds

    if isinstance(default, Choice):
        return "choice"
    if isinstance(default, Seconds):
        return "duration"
    if isinstance(default, bool):
        return "boolean"
    if isinstance(default, Int | int):
        return "integer"
    if isinstance(default, Float | float):
        return "number"
    if isinstance(default, list | tuple):
        return "list"
    return "string"


def default_text(default: Any) -> str:
    """The Default column for a default, as it would be written in pipelines.conf."""
    from bspump.config import Seconds
    from bspump.config.typed import format_seconds

    if isinstance(default, Seconds):
        return f"``{format_seconds(float(default))}``"
    if isinstance(default, bool):
        return f"``{str(default).lower()}``"
    if isinstance(default, list | tuple):
        return f"``{', '.join(map(str, default))}``" if default else "(empty)"
    if isinstance(default, str) and not default:
        return "(empty)"
    return f"``{default}``"


def table_lines(cls: type) -> Iterator[str]:
    """The list-table of ``cls``'s keys, the Meaning column holding what the default accepts."""
    yield ".. list-table::"
    yield "   :header-rows: 1"
    yield ""
    yield from (f"   * - {cell}" if i == 0 else f"     - {cell}" for i, cell in enumerate(HEADER))
    for key, default in declared_keys(cls).items():
        describe = getattr(default, "describe", None)
        meaning = describe() if callable(describe) else "TO WRITE"
        for i, cell in enumerate((f"``{key}``", type_text(default), default_text(default), meaning)):
            yield f"   * - {cell}" if i == 0 else f"     - {cell}"


def print_tables(distribution: str, out: Any = sys.stdout) -> int:
    chosen: Mapping[str, Package] = {p.distribution: p for p in packages()}
    if distribution not in chosen:
        print(f"no package {distribution!r} in packages/ (there are {', '.join(chosen)})", file=sys.stderr)
        return 2
    for name, cls in sorted(registered_classes(chosen[distribution]).items()):
        print(f"{name}\n{'-' * len(name)}\n", file=out)
        for line in table_lines(cls):
            print(line, file=out)
        print(file=out)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python docs/reference_pages.py bspump-NAME", file=sys.stderr)
        sys.exit(2)
    sys.exit(print_tables(sys.argv[1]))
