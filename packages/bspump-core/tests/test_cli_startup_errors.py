"""`bspump check` and `bspump run` over bad input: one line naming file, section and key, the documented exit
code, and no Python traceback unless ``--log-level DEBUG`` asks for it. Real subprocesses."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PIPELINE = "[pipeline:P:In]\ntype = core.MemorySource\n\n[pipeline:P:Out]\ntype = core.NullSink\n"

HELPERS = '''
import bspump


class Refused(bspump.Connection):
    async def connect(self):
        raise ConnectionError("login rejected by db.example")


class Exploding(bspump.Source):
    async def main(self):
        raise ValueError("source exploded")


class Table(bspump.Lookup):
    ConfigDefaults = {"path": ""}

    def preflight(self):
        import os
        if not os.path.isfile(self.Config.getpath("path")):
            raise self.Config.error("path", "no such file")

    async def load(self):
        return {}


class Unreachable(bspump.Lookup):
    async def load(self):
        raise TimeoutError("tables.example did not answer")
'''

BROKEN_PLUGIN = 'raise RuntimeError("this plugin needs libfoo 2.0")\n'


def cli(*args: str, cwd: Path, site: Path | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BSPUMP_")}
    environ["PYTHONPATH"] = os.pathsep.join([*([str(site)] if site else []), str(SRC)])
    return subprocess.run([sys.executable, "-m", "bspump.cli", *args], capture_output=True, text=True,
                          env=environ, cwd=cwd, timeout=60, check=False)


def install_plugin(site: Path, name: str, code: str) -> None:
    """A distribution as pip leaves it: its plugin module and a dist-info naming it in the `bspump` group."""
    module = f"bspump_{name}_plugin"
    (site / f"{module}.py").write_text(code)
    info = site / f"bspump_{name}-1.0.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: bspump-{name}\nVersion: 1.0.0\n")
    (info / "entry_points.txt").write_text(f"[bspump]\n{name} = {module}\n")
    (info / "RECORD").write_text("")


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


@dataclass
class BadInput:
    """A configuration at fault: what `check` and `run` exit with, and what their error line must say."""

    conf: str
    check_code: int
    run_code: int
    says: Callable[[Path], list[str]]
    files: dict[str, str] = field(default_factory=dict)


BAD_INPUTS = {
    "web port in use": BadInput(
        "[web]\nlisten = 127.0.0.1:{port}\n\n" + PIPELINE, 2, 2,
        lambda conf: [f"bspump: error: {conf}:2 [web] listen: cannot listen on 127.0.0.1:",
                      ": address already in use"]),
    "web port out of range": BadInput(
        "[web]\nlisten = 127.0.0.1:99999\n\n" + PIPELINE, 2, 2,
        lambda conf: [f"bspump: error: {conf}:2 [web] listen: ", "99999"]),
    "lookup file missing (preflight)": BadInput(
        "[lookup:Geo]\ntype = helpers:Table\npath = geo.csv\n\n" + PIPELINE, 2, 2,
        lambda conf: [f"bspump: error: {conf}:3 [lookup:Geo] path: no such file"], {"helpers.py": HELPERS}),
    "lookup that fails to load": BadInput(
        "[lookup:Geo]\ntype = helpers:Unreachable\n\n" + PIPELINE, 0, 1,
        lambda conf: [f"bspump: error: {conf}:1 [lookup:Geo]: lookup 'Geo' failed to load: TimeoutError: "
                      "tables.example did not answer"], {"helpers.py": HELPERS}),
    "unknown type": BadInput(
        "[pipeline:P:In]\ntype = core.MemorySorce\n\n[pipeline:P:Out]\ntype = core.NullSink\n", 2, 2,
        lambda conf: [f"bspump: error: {conf}:2 [pipeline:P:In] type: unknown component type 'core.MemorySorce'; "
                      "did you mean 'core.MemorySource'"]),
    "unset variable": BadInput(
        "[pipeline:P:In]\ntype = core.MemorySource\n\n[pipeline:P:Out]\ntype = core.FileSink\n"
        "path = ${NO_SUCH_DIR}/x\n", 2, 2,
        lambda conf: [f"bspump: error: {conf}:6 [pipeline:P:Out] path: environment variable NO_SUCH_DIR is not set"]),
    "plugin that fails to load": BadInput(
        "[connection:Acme]\ntype = brokenplug.Connection\n\n" + PIPELINE, 2, 2,
        lambda conf: [f"bspump: error: {conf}:2 [connection:Acme] type: unknown connection type "
                      "'brokenplug.Connection': plugin 'brokenplug' is installed but failed to load: import failed: "
                      "RuntimeError: this plugin needs libfoo 2.0"]),
    "module that raises on import": BadInput(
        "[pipeline:P:In]\ntype = raising:Source\n\n[pipeline:P:Out]\ntype = core.NullSink\n", 2, 2,
        lambda conf: [f"bspump: error: {conf}:2 [pipeline:P:In] type: importing 'raising' for type 'raising:Source' "
                      "failed: RuntimeError: needs libfoo"], {"raising.py": "raise RuntimeError('needs libfoo')\n"}),
    "connect() that raises": BadInput(
        "[connection:DB]\ntype = helpers:Refused\nmax_connect_attempts = 1\n\n"
        "[pipeline:P:In]\ntype = core.MemorySource\nconnection = DB\n\n[pipeline:P:Out]\ntype = core.NullSink\n",
        0, 1, lambda conf: ["connection 'DB': giving up after 1 attempts: ConnectionError: login rejected by "
                            "db.example (raise max_connect_attempts in [connection:DB]"], {"helpers.py": HELPERS}),
    "source that crashes": BadInput(
        "[pipeline:P:In]\ntype = helpers:Exploding\n\n[pipeline:P:Out]\ntype = core.NullSink\n", 0, 1,
        lambda conf: ["pipeline 'P': source task source:P.In crashed: ValueError: source exploded"],
        {"helpers.py": HELPERS}),
    "malformed file": BadInput(
        "[pipeline:P:In\ntype = core.MemorySource\n", 2, 2,
        lambda conf: [f"bspump: error: {conf}:1: "]),
    "empty file": BadInput(
        "", 2, 2, lambda conf: [f"bspump: error: {conf}: declares no pipeline to run: add "
                                "[pipeline:ID:ComponentID] sections with type = ..."]),
    "components without type": BadInput(
        "[pipeline:P]\nerror_policy = skip\n\n[pipeline:P:In]\nbatch_size = 10\n\n[pipeline:P:Out]\n", 2, 2,
        lambda conf: [f"bspump: error: {conf}: declares no pipeline to run: no component section has a type; add "
                      "type = ... to [pipeline:P:In] (line 4), [pipeline:P:Out] (line 7)"]),
}


@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_one_located_line_and_no_traceback(case: str, command: str, tmp_path: Path,
                                                          taken_port: int) -> None:
    bad = BAD_INPUTS[case]
    site = tmp_path / "site"
    site.mkdir()
    install_plugin(site, "brokenplug", BROKEN_PLUGIN)
    for name, code in bad.files.items():
        (tmp_path / name).write_text(code)
    conf = tmp_path / "pipelines.conf"
    conf.write_text(bad.conf.replace("{port}", str(taken_port)))
    result = cli(command, str(conf), cwd=tmp_path, site=site)
    assert "Traceback" not in result.stderr + result.stdout
    expected_code = bad.check_code if command == "check" else bad.run_code
    assert result.returncode == expected_code, result.stderr
    if expected_code == 0:
        return  # what check cannot know without connecting or running
    for text in bad.says(conf):
        assert text in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("bspump: error:")]
    assert len(error_lines) <= 1, result.stderr


def test_a_missing_input_file_of_a_core_lookup_is_one_line_at_run(tmp_path: Path) -> None:
    conf = tmp_path / "pipelines.conf"
    conf.write_text("[lookup:Geo]\ntype = core.FileLookup\npath = geo.json\n\n" + PIPELINE)
    result = cli("run", str(conf), cwd=tmp_path)
    assert "Traceback" not in result.stderr
    # 2 once FileLookup checks its path at preflight, 1 while only loading it finds out
    assert result.returncode in (1, 2), result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("bspump: error:")]
    assert f"{conf}:1 [lookup:Geo]" in line or f"{conf}:3 [lookup:Geo] path" in line
    assert "geo.json" in line


def test_check_reports_every_preflight_failure_on_its_own_line(tmp_path: Path, taken_port: int) -> None:
    (tmp_path / "helpers.py").write_text(HELPERS)
    conf = tmp_path / "pipelines.conf"
    conf.write_text(f"[web]\nlisten = 127.0.0.1:{taken_port}\n\n[lookup:Geo]\ntype = helpers:Table\npath = geo.csv\n\n"
                    + PIPELINE)
    result = cli("check", str(conf), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"bspump: error: {conf}:2 [web] listen: cannot listen on 127.0.0.1:{taken_port}: address already in use",
        f"bspump: error: {conf}:6 [lookup:Geo] path: no such file",
    ]
    assert "ok: configuration is valid" not in result.stdout


def test_debug_log_level_shows_the_traceback(tmp_path: Path) -> None:
    (tmp_path / "helpers.py").write_text(HELPERS)
    conf = tmp_path / "pipelines.conf"
    conf.write_text("[pipeline:P:In]\ntype = helpers:Exploding\n\n[pipeline:P:Out]\ntype = core.NullSink\n")
    quiet = cli("run", str(conf), cwd=tmp_path)
    loud = cli("--log-level", "DEBUG", "run", str(conf), cwd=tmp_path)
    assert quiet.returncode == loud.returncode == 1
    assert "Traceback" not in quiet.stderr
    assert "Traceback (most recent call last)" in loud.stderr and 'raise ValueError("source exploded")' in loud.stderr


def test_a_python_file_that_raises_is_one_line_naming_it(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text("import bspump\napp = bspump.BSPumpApplication()\nsettings = {}\nsettings['missing']\n")
    for command in ("check", "run"):
        result = cli(command, str(script), cwd=tmp_path)
        assert result.returncode == 1
        assert result.stderr == (f"bspump: error: {script}: KeyError: 'missing' (--log-level DEBUG shows the "
                                 "traceback)\n")


def test_an_unknown_log_level_is_a_usage_error(tmp_path: Path) -> None:
    result = cli("--log-level", "LOUD", "check", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown log level 'LOUD'" in result.stderr and "Traceback" not in result.stderr


def test_a_python_file_that_builds_no_pipeline_warns_and_serves_until_stopped(tmp_path: Path) -> None:
    script = tmp_path / "only_web.py"
    script.write_text(textwrap.dedent("""
        import bspump
        app = bspump.BSPumpApplication()
        app.config.warnings = ["only_web.py: a warning the configuration carries"]
    """))
    result = cli("check", str(script), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "warning: only_web.py: a warning the configuration carries\n" in result.stdout
    assert f"warning: {script} builds no pipeline; run would only serve [web] (if set) until stopped" in result.stdout
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BSPUMP_")}
    environ["PYTHONPATH"] = str(SRC)
    process = subprocess.Popen([sys.executable, "-m", "bspump.cli", "run", str(script)], cwd=tmp_path, env=environ,
                               stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    first = process.stderr.readline()
    second = process.stderr.readline()
    assert process.poll() is None  # still running: it may only serve the web endpoint
    process.terminate()
    rest = process.communicate(timeout=30)[1]
    assert process.returncode == 0, rest
    assert first.endswith("WARNING bspump.application: only_web.py: a warning the configuration carries\n")
    assert second.endswith("WARNING bspump.application: no pipeline was built or added; running until stopped\n")


def test_help_documents_exit_codes_and_what_check_imports() -> None:
    top = subprocess.run([sys.executable, "-m", "bspump.cli", "--help"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(SRC)}, timeout=60, check=True).stdout
    assert "exit codes:" in top and "130 for SIGINT, 143 for SIGTERM" in top
    check = subprocess.run([sys.executable, "-m", "bspump.cli", "check", "--help"], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(SRC)}, timeout=60, check=True).stdout
    assert "A type written as module:Class is imported" in " ".join(check.split())
