"""StdinSource in a real `bspump run` process: stdin as a pipe, a file or /dev/null, bad bytes as event
errors, and SIGTERM while it waits for input."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import IO, Any

from conftest import sigterm_and_wait

SRC = Path(__file__).resolve().parents[1] / "src"


def conf_for(tmp_path: Path, source: str = "", policy: str = "stop") -> Path:
    conf = tmp_path / "pipelines.conf"
    conf.write_text(textwrap.dedent(f"""\
        [pipeline:P]
        error_policy = {policy}
        [pipeline:P:In]
        type = core.StdinSource
        """) + textwrap.dedent(source) + "\n[pipeline:P:Out]\ntype = core.StdoutSink\n")
    return conf


def run(conf: Path, stdin: IO[Any] | None = None, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "bspump.cli", "run", str(conf)], input=data, stdin=stdin,
                          capture_output=True, timeout=30, check=False, env={**os.environ, "PYTHONPATH": str(SRC)})


def test_lines_from_a_pipe_with_a_bad_byte_skip_that_line_only(tmp_path: Path) -> None:
    """Defect 3 of issue 9, on standard input: one bad byte must not stop the source."""
    result = run(conf_for(tmp_path, "format = json\n", policy="skip"), data=b'{"i":1}\n{"i":"\xff"}\n{"i":3}')
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.splitlines() == [b'{"i":1}', b'{"i":3}']  # the last line needs no newline
    assert b"in 3, out 2, dropped 1, errors 1" in result.stderr
    assert b"line=2: UnicodeDecodeError" in result.stderr


def test_stdin_may_be_a_file_or_dev_null(tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_bytes(b"a\r\nb\n")
    with source.open("rb") as handle:
        result = run(conf_for(tmp_path, "format = text\n"), stdin=handle)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.splitlines() == [b'"a"', b'"b"']
    with open(os.devnull, "rb") as handle:
        result = run(conf_for(tmp_path), stdin=handle)
    assert result.returncode == 0 and b"summary: events in 0, out 0" in result.stderr


def test_sigterm_stops_a_source_waiting_for_input_on_a_pipe(tmp_path: Path) -> None:
    """Defect 6 of issue 9 on standard input: a thread blocked in readline() could not be cancelled."""
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "bspump.cli", "--log-level", "INFO", "run",
                                    str(conf_for(tmp_path))], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                   stderr=stderr, env={**os.environ, "PYTHONPATH": str(SRC)})
        try:
            deadline = time.monotonic() + 2  # up to 2 s for the source to start waiting; SIGTERM goes anyway
            while "reading standard input (a pipe)" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.01)
            code = sigterm_and_wait(process)
        finally:
            assert process.stdin is not None
            process.stdin.close()
    assert code == 0, f"SIGTERM did not stop the run within 5 s: {log.read_text()[-2000:]}"
    assert "reading standard input (a pipe)" in log.read_text()
