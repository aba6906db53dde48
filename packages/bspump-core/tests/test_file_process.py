"""FileSource and FileSink in a real `bspump run` process: SIGTERM while waiting on a FIFO, an endless line
from /dev/zero, and a run SIGKILLed mid-file that the next run resumes from its last checkpoint."""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from conftest import sigterm_and_wait

from bspump.checkpoint import FileCheckpointStore

SRC = Path(__file__).resolve().parents[1] / "src"
#: A safety net: a regression that reads an endless line into memory fails instead of exhausting the host.
ADDRESS_SPACE_LIMIT = 4 << 30


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT))


def start(conf: Path, stderr: IO[str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "bspump.cli", "--log-level", "INFO", "run", *args, str(conf)],
                            stdout=subprocess.DEVNULL, stderr=stderr, text=True, preexec_fn=_limit_memory,
                            env={**os.environ, "PYTHONPATH": str(SRC)})


def wait_until(condition: Callable[[], Any], timeout: float) -> bool:
    """Poll ``condition`` every 10 ms for up to ``timeout`` seconds; True once it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def write_pipeline(tmp_path: Path, source: str, sink: str = "type = core.NullSink", extra: str = "",
                   policy: str = "stop") -> Path:
    conf = tmp_path / "pipelines.conf"
    conf.write_text(textwrap.dedent(f"""\
        [general]
        state_dir = {tmp_path}/state
        [pipeline:P]
        error_policy = {policy}
        [pipeline:P:In]
        type = core.FileSource
        """) + textwrap.dedent(source) + extra + f"\n[pipeline:P:Out]\n{sink}\n")
    return conf


def test_sigterm_stops_a_run_waiting_on_a_fifo_without_a_writer(tmp_path: Path) -> None:
    """Defect 6 of issue 9: SIGTERM did nothing (a worker thread was blocked in open())."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    conf = write_pipeline(tmp_path, f"path = {fifo}\n")
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:
        process = start(conf, stderr)
        # up to 2 s for the source to log that it waits (if it never does, SIGTERM goes anyway)
        wait_until(lambda: "waiting for a writer" in log.read_text(), timeout=2)
        code = sigterm_and_wait(process)
    assert code == 0, f"SIGTERM did not stop the run within 5 s: {log.read_text()[-2000:]}"
    assert "summary: events in 0, out 0" in log.read_text()


def test_an_endless_line_under_stop_ends_the_run_with_one_line_naming_max_line_bytes(tmp_path: Path) -> None:
    """Defect 7 of issue 9: /dev/zero as text grew memory until MemoryError."""
    conf = write_pipeline(tmp_path, "path = /dev/zero\nformat = text\n")
    result = subprocess.run([sys.executable, "-m", "bspump.cli", "run", str(conf)], capture_output=True,
                            text=True, timeout=60, check=False, preexec_fn=_limit_memory,
                            env={**os.environ, "PYTHONPATH": str(SRC)})
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    [error] = [line for line in result.stderr.splitlines() if "stops:" in line]
    assert "path='/dev/zero', line=1" in error and "over max_line_bytes = 1048576" in error


def test_an_endless_line_under_skip_keeps_memory_flat_and_sigterm_stops_it(tmp_path: Path) -> None:
    conf = write_pipeline(tmp_path, "path = /dev/zero\nformat = text\n", policy="skip")
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:
        process = start(conf, stderr)
        try:
            status = Path(f"/proc/{process.pid}/status")
            io = Path(f"/proc/{process.pid}/io")

            def bytes_read() -> int:
                fields = dict(line.split(": ") for line in io.read_text().splitlines())
                return int(fields["rchar"])

            assert wait_until(lambda: process.poll() is not None or bytes_read() > 512 << 20, timeout=30)
            assert process.poll() is None, log.read_text()[-2000:]
            peak = next(int(line.split()[1]) for line in status.read_text().splitlines()
                        if line.startswith("VmHWM:"))  # kB
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=5)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    print(f"peak RSS {peak:,} kB after reading 512 MiB of one line")
    assert peak < 200 << 10, f"peak RSS {peak} kB after reading 512 MiB of one line"
    assert code == 0
    assert re.search(r"line=1: LineTooLongError: line has no newline in its first 67,[0-9,]+ bytes, over "
                     r"max_line_bytes = 1048576 \(its rest is skipped\)", log.read_text())


SLOWDOWN = '''
import time
import bspump


class Pause(bspump.Processor):
    """Takes a few milliseconds per thousand events, so that a kill lands mid-file."""

    def process(self, context, event):
        if event["n"] % 1000 == 0:
            time.sleep(0.004)
        return event
'''


def test_a_sigkilled_run_resumes_from_its_last_checkpoint_and_loses_nothing(tmp_path: Path) -> None:
    """Issue 8 acceptance: every input line reaches the output at least once, and the second run starts
    exactly at the offset the first one committed (it re-reads only what was not committed)."""
    total = 200_000
    source = tmp_path / "in.jsonl"
    source.write_text("".join(f'{{"n": {n}}}\n' for n in range(total)))
    (tmp_path / "slowdown.py").write_text(SLOWDOWN)
    output = tmp_path / "out.jsonl"
    conf = tmp_path / "pipelines.conf"
    conf.write_text(textwrap.dedent("""\
        [general]
        state_dir = state
        [pipeline:P]
        components = In, Pause, Out
        [pipeline:P:In]
        type = core.FileSource
        path = in.jsonl
        commit_interval = 50ms
        [pipeline:P:Pause]
        type = slowdown:Pause
        [pipeline:P:Out]
        type = core.FileSink
        path = out.jsonl
        """))
    store = FileCheckpointStore(tmp_path / "state")

    def committed() -> dict[str, int] | None:
        path = store.path_of("P.In")
        if not path.exists():
            return None
        position: dict[str, int] = json.loads(path.read_text())[str(source)]
        return position if position["offset"] > 0 else None

    with (tmp_path / "first.txt").open("w") as stderr:
        first = start(conf, stderr)
        try:
            assert wait_until(lambda: committed() is not None or first.poll() is not None, timeout=20)
            assert first.poll() is None, "the first run ended before it could be killed"
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=5)
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()
    position = committed()
    assert position is not None and position["offset"] < source.stat().st_size
    checkpoint_line = position["line"]

    second = subprocess.run([sys.executable, "-m", "bspump.cli", "--log-level", "INFO", "run", str(conf)],
                            capture_output=True, text=True, timeout=60, check=False,
                            env={**os.environ, "PYTHONPATH": str(SRC)})
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"resuming '{source}' at byte {position['offset']} (line {checkpoint_line + 1})" in second.stderr

    seen = [json.loads(line)["n"] for line in output.read_text().splitlines()]
    first_part = len(seen) - (total - checkpoint_line)  # what the first run wrote before it was killed
    assert first_part >= checkpoint_line
    assert seen[:first_part] == list(range(first_part))
    assert seen[first_part:] == list(range(checkpoint_line, total))  # the second run: from the checkpoint on
    assert set(seen) == set(range(total))  # every line at least once
    duplicates = first_part - checkpoint_line
    print(f"killed after {first_part:,} lines written; checkpoint at line {checkpoint_line:,}; "
          f"{duplicates:,} lines written twice")
