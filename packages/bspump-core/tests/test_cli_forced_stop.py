"""A second SIGINT/SIGTERM forces the stop of `bspump run`: the summary of what was acknowledged is printed, the
exit code is 128 + the signal's number, and no traceback. Real subprocesses, real signals."""

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

#: A pipeline whose sink never acknowledges; its source leaves a mark when the graceful stop cancels it.
NEVER_ACKNOWLEDGED = textwrap.dedent("""
    import asyncio
    import pathlib
    import bspump

    class Counter(bspump.Source):
        async def main(self):
            n = 0
            try:
                while True:
                    await self.emit(list(range(n, n + 10)))
                    n += 10
            except asyncio.CancelledError:
                pathlib.Path("stopping").write_text("the graceful stop began")
                raise

    class NeverAcknowledged(bspump.AsyncSink):
        async def write(self, batch):
            pathlib.Path("writing").write_text("a batch reached the sink")
            await asyncio.Event().wait()

    class Job(bspump.Pipeline):
        def __init__(self, app, pipeline_id):
            super().__init__(app, pipeline_id, config={"max_in_flight": 50, "drain_timeout": "1h"})
            self.build(Counter(app, self), NeverAcknowledged(app, self))

    app = bspump.BSPumpApplication()
    app.get_service("bspump.PumpService").add_pipeline(Job(app, "Job"))
""")

#: A pipeline that ends gracefully but leaves a worker thread stuck in a blocking call.
STUCK_THREAD = textwrap.dedent("""
    import asyncio
    import pathlib
    import threading
    import bspump

    class Blocked(bspump.Source):
        async def main(self):
            await self.emit([1, 2, 3])
            pathlib.Path("emitted").write_text("the source now blocks in a thread")
            await asyncio.to_thread(threading.Event().wait)  # a read that never returns

    class Job(bspump.Pipeline):
        def __init__(self, app, pipeline_id):
            super().__init__(app, pipeline_id)
            self.build(Blocked(app, self), bspump.NullSink(app, self))

    app = bspump.BSPumpApplication()
    app.get_service("bspump.PumpService").add_pipeline(Job(app, "Job"))
""")


def start(tmp_path: Path, code: str) -> tuple[subprocess.Popen[bytes], Path]:
    script = tmp_path / "job.py"
    script.write_text(code)
    stderr = tmp_path / "stderr.txt"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BSPUMP_")}
    environ["PYTHONPATH"] = str(SRC)
    with stderr.open("wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "bspump.cli", "run", str(script)], cwd=tmp_path,
                                   env=environ, stdout=subprocess.DEVNULL, stderr=sink)
    return process, stderr


def wait_for_file(path: Path, process: subprocess.Popen[bytes], contains: str = "", timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and contains in path.read_text()):
        assert process.poll() is None, f"bspump ended early with {process.returncode}"
        assert time.monotonic() < deadline, f"{path.name} did not appear within {timeout}s"
        time.sleep(0.02)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_second_signal_forces_the_stop_with_the_summary_and_128_plus_the_signal(tmp_path: Path,
                                                                                  sig: signal.Signals) -> None:
    process, stderr_file = start(tmp_path, NEVER_ACKNOWLEDGED)
    wait_for_file(tmp_path / "writing", process)
    process.send_signal(sig)
    wait_for_file(tmp_path / "stopping", process)  # the first signal was handled: the graceful stop waits
    process.send_signal(sig)
    process.wait(timeout=30)
    stderr = stderr_file.read_text()
    assert process.returncode == 128 + sig.value, stderr
    assert "Traceback" not in stderr and "CancelledError" not in stderr
    summary = re.search(r"^summary: events in ([\d,]+), out 0, dropped 0, errors 0;", stderr, re.MULTILINE)
    assert summary is not None, stderr
    in_flight = int(summary.group(1).replace(",", ""))
    assert in_flight > 0
    assert f"pipeline Job (stopping): in {in_flight:,}, out 0," in stderr
    assert (f"forced stop by a second {sig.name}: {in_flight:,} events in flight were not acknowledged "
            f"(they are read again where the source keeps positions); exit code {128 + sig.value}\n") in stderr


def test_a_signal_after_the_run_ended_does_not_wait_for_a_stuck_worker_thread(tmp_path: Path) -> None:
    process, stderr_file = start(tmp_path, STUCK_THREAD)
    wait_for_file(tmp_path / "emitted", process)
    process.send_signal(signal.SIGINT)  # a graceful stop: the pipeline finishes, the summary is printed ...
    wait_for_file(stderr_file, process, contains="summary: events in 3, out 3")  # ... then the exit hangs
    process.send_signal(signal.SIGINT)  # the interpreter waits for the stuck thread: this ends it
    process.wait(timeout=30)
    stderr = stderr_file.read_text()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.endswith("bspump: SIGINT: exiting without waiting for worker threads\n")
