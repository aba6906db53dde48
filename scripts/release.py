"""Release metadata of the packages in ``packages/``, checked before anything is built or published.

    python scripts/release.py check          every package: a version, a CHANGELOG.md entry for it, and
                                             (connectors) a bspump-core range that admits the core's version
    python scripts/release.py tag TAG        the package a tag ``bspump-<name>-v<version>`` releases; fails
                                             unless that package exists and its version is <version>
                                             (prints the package folder, for the release workflow)

Standard library only: it runs before anything is installed (CI, the release workflow).
"""

from __future__ import annotations

import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = "bspump-core"
TAG = re.compile(r"^(?P<name>bspump-[a-z0-9][a-z0-9-]*)-v(?P<version>\d+\.\d+\.\d+(?:[.-]?(?:a|b|rc|post|dev)\d+)*)$")
REQUIREMENT = re.compile(r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(?P<spec>[^;]*)")


@dataclass
class Package:
    folder: Path
    name: str
    version: str
    dependencies: list[str]


def packages(root: Path = ROOT) -> list[Package]:
    """Every package of ``packages/`` (a folder holding a pyproject.toml)."""
    found = []
    for pyproject in sorted((root / "packages").glob("*/pyproject.toml")):
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
        found.append(Package(pyproject.parent, project["name"], str(project.get("version", "")),
                             list(project.get("dependencies", []))))
    return found


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3])


def admits(specifier: str, version: str) -> bool:
    """Whether a specifier such as ``>=0.1,<0.2`` admits ``version`` (the operators a range needs)."""
    have = _version_tuple(version)
    for clause in filter(None, (c.strip() for c in specifier.split(","))):
        match = re.match(r"(>=|<=|==|!=|~=|>|<)\s*(\S+)", clause)
        if match is None:
            raise ValueError(f"cannot read the clause {clause!r}")
        op, want = match.group(1), _version_tuple(match.group(2))
        width = max(len(have), len(want))
        a, b = have + (0,) * (width - len(have)), want + (0,) * (width - len(want))
        ok = {">=": a >= b, "<=": a <= b, ">": a > b, "<": a < b, "==": a == b, "!=": a != b,
              "~=": a >= b and a[: len(want) - 1] == b[: len(want) - 1]}[op]
        if not ok:
            return False
    return True


def core_range(package: Package) -> str | None:
    """The specifier of the package's bspump-core dependency, or None when it declares none."""
    for requirement in package.dependencies:
        match = REQUIREMENT.match(requirement)
        if match and match.group("name").lower().replace("_", "-") == CORE:
            return match.group("spec").strip()
    return None


def problems(package: Package, core_version: str) -> list[str]:
    """What keeps ``package`` from being released as it stands."""
    where = package.folder.relative_to(ROOT) if package.folder.is_relative_to(ROOT) else package.folder
    found = []
    if not re.fullmatch(r"\d+\.\d+\.\d+\S*", package.version):
        found.append(f"{where}/pyproject.toml: version {package.version!r} is not MAJOR.MINOR.PATCH")
    changelog = package.folder / "CHANGELOG.md"
    if not changelog.is_file():
        found.append(f"{where}: no CHANGELOG.md")
    elif not re.search(rf"^## {re.escape(package.version)}\b", changelog.read_text(encoding="utf-8"), re.MULTILINE):
        found.append(f"{where}/CHANGELOG.md: no '## {package.version}' section for the version in pyproject.toml")
    if package.name != CORE:
        spec = core_range(package)
        if spec is None:
            found.append(f"{where}/pyproject.toml: no bspump-core dependency")
        elif "<" not in spec or ">" not in spec:
            found.append(f"{where}/pyproject.toml: bspump-core{spec} is not a range (write >=LOW,<HIGH)")
        elif not admits(spec, core_version):
            found.append(f"{where}/pyproject.toml: bspump-core{spec} excludes the core of this repository "
                         f"({core_version})")
    return found


def check(root: Path = ROOT) -> int:
    every = packages(root)
    core = next((p for p in every if p.name == CORE), None)
    if core is None:
        print(f"error: no {CORE} under {root / 'packages'}", file=sys.stderr)
        return 1
    failures = [problem for package in every for problem in problems(package, core.version)]
    for package in every:
        spec = core_range(package)
        print(f"{package.name} {package.version}" + (f" (bspump-core{spec})" if spec else ""))
    for failure in failures:
        print(f"error: {failure}", file=sys.stderr)
    return 1 if failures else 0


def tag(value: str, root: Path = ROOT) -> int:
    match = TAG.match(value.removeprefix("refs/tags/"))
    if match is None:
        print(f"error: tag {value!r} is not bspump-<name>-v<MAJOR.MINOR.PATCH>", file=sys.stderr)
        return 1
    name, version = match.group("name"), match.group("version")
    every = {p.name: p for p in packages(root)}
    package = every.get(name)
    if package is None:
        print(f"error: tag {value!r} names {name}, which is not a package here ({', '.join(every)})",
              file=sys.stderr)
        return 1
    if package.version != version:
        print(f"error: tag {value!r} releases {name} {version}, but its pyproject.toml says {package.version}",
              file=sys.stderr)
        return 1
    found = problems(package, every[CORE].version)
    for failure in found:
        print(f"error: {failure}", file=sys.stderr)
    if found:
        return 1
    print(package.folder.relative_to(root))
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["check"] and len(argv) == 1:
        return check()
    if argv[:1] == ["tag"] and len(argv) == 2:
        return tag(argv[1])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
