"""The release and selective-install checks, on package trees written here (run by ``nox -s build``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


release = load("release")
selective = load("check_selective_install")


def package(root: Path, name: str, version: str, dependencies: list[str], changelog: str | None = None,
            extras: dict[str, list[str]] | None = None) -> None:
    folder = root / "packages" / name
    folder.mkdir(parents=True)
    lines = [f'[project]\nname = "{name}"\nversion = "{version}"\ndependencies = {dependencies!r}\n'.replace("'", '"')]
    if extras:
        lines.append("[project.optional-dependencies]\n")
        lines.extend(f'{extra} = {deps!r}\n'.replace("'", '"') for extra, deps in extras.items())
    (folder / "pyproject.toml").write_text("".join(lines))
    if changelog is not None:
        (folder / "CHANGELOG.md").write_text(changelog)


@pytest.mark.parametrize(("spec", "version", "expected"), [
    (">=0.1.0,<0.2", "0.1.0", True), (">=0.1.0,<0.2", "0.1.7", True), (">=0.1.0,<0.2", "0.2.0", False),
    (">=0.2,<1", "0.1.9", False), ("~=1.4", "1.9.0", True), ("~=1.4.2", "1.5.0", False),
])
def test_admits(spec: str, version: str, expected: bool) -> None:
    assert release.admits(spec, version) is expected


def test_release_metadata_problems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(release, "ROOT", tmp_path)
    package(tmp_path, "bspump-core", "0.3.0", ["pluggy>=1.5"], "# Changelog\n\n## 0.3.0\n- x\n")
    package(tmp_path, "bspump-good", "1.0.0", ["bspump-core>=0.3,<0.4", "aiokafka>=0.12"], "## 1.0.0 (unreleased)\n")
    package(tmp_path, "bspump-open", "1.0.0", ["bspump-core>=0.3"], "## 1.0.0\n")
    package(tmp_path, "bspump-old", "1.0.0", ["bspump-core>=0.1,<0.2"], "## 1.0.0\n")
    package(tmp_path, "bspump-nolog", "2.0.0", ["bspump-core>=0.3,<0.4"], "## 1.9.0\n")
    found = {p.name: release.problems(p, "0.3.0") for p in release.packages(tmp_path)}
    assert found["bspump-core"] == [] and found["bspump-good"] == []
    assert found["bspump-open"] == ["packages/bspump-open/pyproject.toml: bspump-core>=0.3 is not a range "
                                    "(write >=LOW,<HIGH)"]
    assert found["bspump-old"] == ["packages/bspump-old/pyproject.toml: bspump-core>=0.1,<0.2 excludes the core "
                                   "of this repository (0.3.0)"]
    assert found["bspump-nolog"] == ["packages/bspump-nolog/CHANGELOG.md: no '## 2.0.0' section for the version "
                                     "in pyproject.toml"]


def test_a_tag_names_one_package_at_its_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    package(tmp_path, "bspump-core", "0.3.0", [], "## 0.3.0\n")
    package(tmp_path, "bspump-kafka", "1.2.0", ["bspump-core>=0.3,<0.4"], "## 1.2.0\n")
    assert release.tag("bspump-kafka-v1.2.0", tmp_path) == 0
    assert capsys.readouterr().out.strip() == "packages/bspump-kafka"
    assert release.tag("refs/tags/bspump-core-v0.3.0", tmp_path) == 0
    assert release.tag("bspump-kafka-v1.3.0", tmp_path) == 1
    assert "releases bspump-kafka 1.3.0, but its pyproject.toml says 1.2.0" in capsys.readouterr().err
    assert release.tag("bspump-mqtt-v1.0.0", tmp_path) == 1
    assert release.tag("kafka-1.2.0", tmp_path) == 1


def test_selective_install_names_what_another_connector_brought(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # This test's own environment stands in for the venv: pytest is installed, so a connector declaring it
    # is "another connector's client" that came along.
    package(tmp_path, "bspump-core", "0.1.0", ["pluggy>=1.5"])
    package(tmp_path, "bspump-other", "0.1.0", ["bspump-core>=0.1,<0.2", "pytest>=8"],
            extras={"fast": ["iniconfig"]})
    package(tmp_path, "bspump-pluggy-user", "0.1.0", ["bspump-core>=0.1,<0.2", "pluggy"])
    assert selective.main(tmp_path, "bspump-pluggy-user") == 1
    err = capsys.readouterr().err
    assert "installing bspump-pluggy-user pulled in what only other connectors need: iniconfig, pytest" in err
    assert "bspump-pluggy-user is not installed" in err
