"""Run by the Python of a venv that holds bspump-core and ONE connector, both installed from their wheels.

    python check_selective_install.py REPOSITORY bspump-NAME
    python check_selective_install.py REPOSITORY bspump-core      (bspump-core alone: no connector client)

Proves the install is selective: the connector and the core came from wheels (not the source tree), and no
other connector of the repository, nor any client library only another connector declares, came along. The
connectors and their dependencies are read from packages/*/pyproject.toml, never listed here.
Standard library only (the venv holds nothing else).
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import sys
import tomllib
from pathlib import Path

REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(pyproject: Path) -> tuple[str, set[str]]:
    """A package's name and every distribution it may pull in: dependencies and all its extras' ones."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    requirements = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        requirements.extend(extra)
    names = set()
    for requirement in requirements:
        match = REQUIREMENT.match(requirement)
        if match:
            names.add(canonical(match.group(1)))
    return canonical(project["name"]), names


def main(repository: Path, chosen: str) -> int:
    packages = dict(declared(p) for p in sorted((repository / "packages").glob("*/pyproject.toml")))
    chosen = canonical(chosen)
    if chosen not in packages:
        print(f"error: {chosen} is not a package of {repository}", file=sys.stderr)
        return 1
    installed = {canonical(d.metadata["Name"]): d for d in importlib.metadata.distributions()}
    allowed = {"bspump-core", chosen} | packages["bspump-core"] | packages[chosen]
    # What only the other connectors bring: their own distributions and the dependencies we do not share.
    foreign = {name for package, deps in packages.items() if package not in ("bspump-core", chosen)
               for name in {package, *deps}} - allowed
    print(f"{chosen}: {len(installed)} distributions installed: "
          + ", ".join(f"{n} {d.version}" for n, d in sorted(installed.items())))
    failures = []
    for name in sorted({"bspump-core", chosen}):
        dist = installed.get(name)
        if dist is None:
            failures.append(f"{name} is not installed")
            continue
        location = Path(str(dist.locate_file(""))).resolve()
        origin = json.loads(dist.read_text("direct_url.json") or "{}")
        editable = bool(origin.get("dir_info", {}).get("editable"))
        if editable or location.is_relative_to((repository / "packages").resolve()):
            failures.append(f"{name} is installed from the source tree (editable), not from its wheel")
    leaked = sorted(foreign & set(installed))
    if leaked:
        failures.append(f"installing {chosen} pulled in what only other connectors need: {', '.join(leaked)}")
    for failure in failures:
        print(f"error: {failure}", file=sys.stderr)
    if not failures:
        others = f"none of {', '.join(sorted(foreign))}" if foreign else "no other connector in packages/ yet"
        alone = "alone" if chosen == "bspump-core" else "alone with bspump-core"
        print(f"ok: {chosen} installed {alone} ({others})")
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(Path(sys.argv[1]), sys.argv[2]))
