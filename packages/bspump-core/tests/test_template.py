"""``bspump new-plugin``: the distribution it writes, the names it derives, what it refuses.

The generated plugin's own tests (the conformance kit against SQLite), ruff and mypy run in the nox session
``template``, which installs it into an empty virtual environment.
"""

from __future__ import annotations

import importlib
import sys
import tomllib
from pathlib import Path

import pytest

from bspump.cli import main
from bspump.plugins import Plugins
from bspump.template import MAX_NAME_LENGTH, TemplateError, new_plugin, next_breaking, plugin_names
from bspump.version import __version__

FILES = [
    ".gitignore",
    "CHANGELOG.md",
    "README.md",
    "examples/events.jsonl",
    "examples/pipelines.conf",
    "pyproject.toml",
    "src/bspump_sqlite/__init__.py",
    "src/bspump_sqlite/checkpoint.py",
    "src/bspump_sqlite/connection.py",
    "src/bspump_sqlite/plugin.py",
    "src/bspump_sqlite/py.typed",
    "src/bspump_sqlite/sink.py",
    "src/bspump_sqlite/source.py",
    "tests/test_conformance.py",
    "tests/test_connector.py",
]


def written(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


def test_writes_a_complete_distribution_that_compiles(tmp_path: Path) -> None:
    target = new_plugin("sqlite", tmp_path)
    assert target == tmp_path / "bspump-sqlite"
    assert written(target) == FILES
    for relative in FILES:
        text = (target / relative).read_text(encoding="utf-8")
        assert "{{" not in text and "}}" not in text, f"{relative}: a placeholder was left"
        if relative.endswith(".py"):
            compile(text, relative, "exec")  # raises SyntaxError if the template is broken
    source = {name: (target / "src/bspump_sqlite" / f"{name}.py").read_text() for name in ("connection", "source",
                                                                                           "sink", "plugin")}
    assert "class SqliteConnection(Connection):" in source["connection"]
    assert "class SqliteSource(PositionedSource[str]):" in source["source"]
    assert "class SqliteSink(AsyncSink):" in source["sink"]
    assert "register(SqliteConnection)" in source["plugin"]
    readme = (target / "README.md").read_text()
    assert "type = sqlite.SqliteConnection" in readme and "pip install bspump-sqlite" in readme


def test_pyproject_declares_the_entry_point_and_the_test_extra(tmp_path: Path) -> None:
    target = new_plugin("my_store", tmp_path)
    project = tomllib.loads((target / "pyproject.toml").read_text())
    core = __version__.split("+")[0]
    assert project["build-system"]["build-backend"] == "hatchling.build"
    assert project["project"]["name"] == "bspump-my-store"
    upper = next_breaking(core)
    assert project["project"]["dependencies"] == [f"bspump-core>={core},<{upper}"]
    assert project["project"]["optional-dependencies"]["test"] == [f"bspump-core[testing]>={core},<{upper}",
                                                                   "pytest>=8"]
    assert project["project"]["entry-points"]["bspump"] == {"my_store": "bspump_my_store.plugin"}
    assert project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == ["src/bspump_my_store"]
    assert project["tool"]["mypy"]["strict"] is True
    config = (target / "examples/pipelines.conf").read_text()
    assert "type = my_store.MyStoreConnection" in config and "type = my_store.MyStoreSink" in config


@pytest.mark.parametrize(("name", "prefix", "package", "distribution"), [
    ("sqlite", "Sqlite", "bspump_sqlite", "bspump-sqlite"),
    ("my_store", "MyStore", "bspump_my_store", "bspump-my-store"),
    ("s3", "S3", "bspump_s3", "bspump-s3"),
    ("rabbit_mq2", "RabbitMq2", "bspump_rabbit_mq2", "bspump-rabbit-mq2"),
])
def test_every_name_derives_from_the_plugin_name(name: str, prefix: str, package: str, distribution: str) -> None:
    names = plugin_names(name)
    assert (names.name, names.class_prefix, names.package, names.distribution) == (name, prefix, package,
                                                                                  distribution)


@pytest.mark.parametrize(("name", "problem"), [
    ("SQLite", "not a usable plugin name"),
    ("my-store", "not a usable plugin name"),
    ("2db", "not a usable plugin name"),
    ("my__store", "not a usable plugin name"),
    ("store_", "not a usable plugin name"),
    ("", "not a usable plugin name"),
    ("bspump.sqlite", "not a usable plugin name"),
    ("a" * (MAX_NAME_LENGTH + 1), f"longer than {MAX_NAME_LENGTH} characters"),
    ("core", "taken by the bspump project's own bspump-core"),
    ("kafka", "taken by the bspump project's own bspump-kafka"),
])
def test_unusable_names_are_refused_before_anything_is_written(tmp_path: Path, name: str, problem: str) -> None:
    with pytest.raises(TemplateError, match=problem):
        new_plugin(name, tmp_path)
    assert list(tmp_path.iterdir()) == []

@pytest.mark.parametrize(("version", "upper"), [("0.1.0", "0.2"), ("0.9.4", "0.10"), ("1.4.0", "2"),
                                                 ("0.0.0+source", "0.1"), ("2.0.0rc1", "3")])
def test_a_plugin_admits_the_core_up_to_its_next_breaking_release(version: str, upper: str) -> None:
    assert next_breaking(version) == upper


def test_an_existing_folder_is_never_overwritten(tmp_path: Path) -> None:
    existing = tmp_path / "bspump-sqlite"
    existing.mkdir()
    (existing / "pyproject.toml").write_text("mine")
    with pytest.raises(TemplateError, match="already exists; nothing was written"):
        new_plugin("sqlite", tmp_path)
    assert written(existing) == ["pyproject.toml"]
    assert (existing / "pyproject.toml").read_text() == "mine"


def test_a_directory_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "plugins").write_text("")
    with pytest.raises(TemplateError, match="plugins is not a folder; nothing was written"):
        new_plugin("sqlite", tmp_path / "plugins")


def test_the_longest_name_keeps_every_python_line_within_the_line_length(tmp_path: Path) -> None:
    name = "x" * MAX_NAME_LENGTH
    target = new_plugin(name, tmp_path)
    limit = tomllib.loads((target / "pyproject.toml").read_text())["tool"]["ruff"]["line-length"]
    long_lines = [f"{path.relative_to(target)}:{number}" for path in target.rglob("*.py")
                  for number, line in enumerate(path.read_text().splitlines(), 1) if len(line) > limit]
    assert not long_lines, f"lines longer than {limit} characters: {long_lines}"


def test_the_generated_plugin_registers_its_types(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = new_plugin("tryout", tmp_path)
    monkeypatch.syspath_prepend(str(target / "src"))
    try:
        plugin = importlib.import_module("bspump_tryout.plugin")
        info = Plugins(load_entry_points=False).register("tryout", plugin)
    finally:
        for module in [m for m in sys.modules if m == "bspump_tryout" or m.startswith("bspump_tryout.")]:
            del sys.modules[module]
    assert (info.status, info.error) == ("loaded", None)
    assert info.types == ["connection:tryout.TryoutConnection", "source:tryout.TryoutSource",
                          "sink:tryout.TryoutSink"]


def test_the_command_writes_the_plugin_and_says_what_next(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["new-plugin", "sqlite", "--directory", str(tmp_path / "plugins")]) == 0
    out = capsys.readouterr().out
    assert f"created {tmp_path / 'plugins' / 'bspump-sqlite'}" in out
    assert "pip install -e '.[test]'" in out
    assert written(tmp_path / "plugins" / "bspump-sqlite") == FILES


@pytest.mark.parametrize("name", ["My-Store", "sqlite"])
def test_the_command_fails_with_one_line_and_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         name: str) -> None:
    (tmp_path / "bspump-sqlite").mkdir()
    assert main(["new-plugin", name, "--directory", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("bspump: error: "), captured.err
    assert captured.out == ""
