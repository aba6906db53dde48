"""The `bspump` command, run as a real subprocess."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
REPO = Path(__file__).resolve().parents[3]
QUICKSTART = REPO / "examples" / "quickstart"
#: The smallest pipeline a configuration file can declare, for tests about its other sections.
A_PIPELINE = "\n[pipeline:P:In]\ntype = core.MemorySource\n\n[pipeline:P:Out]\ntype = core.NullSink\n"


def bspump(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(SRC), **(env or {})}
    return subprocess.run([sys.executable, "-m", "bspump.cli", *args], capture_output=True, text=True,
                          env=environment, cwd=cwd, timeout=timeout, check=False)


@pytest.mark.skipif(not QUICKSTART.is_dir(), reason="runs from a clone of the repository")
def test_run_quickstart_folder_prints_summary(tmp_path: Path) -> None:
    output = tmp_path / "requests.jsonl"
    result = bspump("run", str(QUICKSTART), env={"QUICKSTART_OUTPUT": str(output)}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "summary: events in 5,000, out 2,004, dropped 2,996, errors 5" in result.stderr
    assert "events/s" in result.stderr
    lines = output.read_text().splitlines()
    assert len(lines) == 2004
    assert '"country":' in lines[0]


def test_run_python_file_runs_its_app_once(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent("""
        import bspump

        class Double(bspump.Processor):
            def process(self, context, event):
                return event * 2

        class Job(bspump.Pipeline):
            def __init__(self, app, pipeline_id):
                super().__init__(app, pipeline_id)
                self.build(bspump.MemorySource(app, self, events=list(range(100))), Double(app, self),
                           bspump.FileSink(app, self, config={"path": "out.jsonl"}))

        app = bspump.BSPumpApplication()
        app.get_service("bspump.PumpService").add_pipeline(Job(app, "Job"))

        if __name__ == "__main__":
            app.run()
    """))
    result = bspump("run", str(script), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "pipeline Job (finished): in 100, out 100" in result.stderr
    assert (tmp_path / "out.jsonl").read_text().split() == [str(n * 2) for n in range(100)]


def test_run_reports_missing_path_and_empty_folder(tmp_path: Path) -> None:
    result = bspump("run", str(tmp_path / "nope"))
    assert result.returncode == 2 and "no such file or folder" in result.stderr
    result = bspump("run", str(tmp_path))
    assert result.returncode == 2 and "holds neither pipelines.conf" in result.stderr


def test_check_reports_bad_configuration_with_location(tmp_path: Path) -> None:
    conf = tmp_path / "pipelines.conf"
    conf.write_text("[pipeline:P]\nerror_policy = skip\nmax_in_flght = 10\n")
    result = bspump("check", str(conf))
    assert result.returncode == 2
    assert "pipelines.conf:3 [pipeline:P] max_in_flght" in result.stderr
    assert "did you mean 'max_in_flight'" in result.stderr


def test_check_never_prints_secrets(tmp_path: Path) -> None:
    conf = tmp_path / "pipelines.conf"
    conf.write_text("[connection:DB]\ntype = tests_conn:Conn\npassword = ${DB_PASSWORD}\nhost = db\n" + A_PIPELINE)
    (tmp_path / "tests_conn.py").write_text(
        "import bspump\nclass Conn(bspump.Connection):\n    async def connect(self): pass\n")
    result = bspump("check", str(conf), env={"DB_PASSWORD": "hunter2-very-secret"}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "hunter2-very-secret" not in result.stdout + result.stderr
    assert '"password":"***"' in result.stdout


def test_sigterm_stops_gracefully_and_loses_nothing(tmp_path: Path) -> None:
    script = tmp_path / "endless.py"
    script.write_text(textwrap.dedent("""
        import asyncio
        import bspump

        class Counter(bspump.Source):
            async def main(self):
                n = 0
                while True:
                    await self.emit(list(range(n, n + 100)))
                    n += 100
                    await asyncio.sleep(0.001)

        class SlowSink(bspump.AsyncSink):
            async def write(self, batch):
                await asyncio.sleep(0.01)
                with open("written.txt", "a") as f:
                    f.write("".join(f"{e}\\n" for e in batch.events))

        class Job(bspump.Pipeline):
            def __init__(self, app, pipeline_id):
                super().__init__(app, pipeline_id)
                self.build(Counter(app, self), SlowSink(app, self))

        app = bspump.BSPumpApplication()
        app.get_service("bspump.PumpService").add_pipeline(Job(app, "Job"))
    """))
    environment = {**os.environ, "PYTHONPATH": str(SRC)}
    process = subprocess.Popen([sys.executable, "-m", "bspump.cli", "run", str(script)], cwd=tmp_path,
                               env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    written = tmp_path / "written.txt"
    while time.monotonic() < deadline and (not written.exists() or written.stat().st_size < 2000):
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    numbers = [int(line) for line in written.read_text().split()]
    summary = re.search(r"pipeline Job \(finished\): in ([\d,]+), out ([\d,]+)", stderr)
    assert summary is not None, stderr
    emitted = int(summary.group(1).replace(",", ""))
    assert numbers == list(range(len(numbers)))  # in order, nothing missing
    assert len(numbers) == emitted  # every event the source emitted was written before exit


def test_check_warns_about_sections_nothing_uses(tmp_path: Path) -> None:
    conf = tmp_path / "pipelines.conf"
    conf.write_text(
        "[connection:KafkaConection]\nbootstrap_servers = k:9092\n\n[pipeline:Nobody]\nerror_policy = skip\n"
        + A_PIPELINE
    )
    result = bspump("check", str(conf))
    assert result.returncode == 0, result.stderr
    assert f"warning: {conf}:1 [connection:KafkaConection] configures no connection (known: none)" in result.stdout
    assert f"warning: {conf}:4 [pipeline:Nobody] configures no pipeline" in result.stdout
