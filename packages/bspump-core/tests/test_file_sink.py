"""FileSink: only lines that fully reached the file are acknowledged, a failed write never leaves a torn or
repeated line, and write errors meet the error policy (transient ones after retrying)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import make_app, run_app, wait_for, write_conf

import bspump

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of the test's own (the tests run as root here and in CI)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def copy_app(tmp_path: Path, source: str, sink: str, pipeline: str = "") -> bspump.BSPumpApplication:
    """Pipeline P: In (a FileSource) -> Out (a FileSink), checkpoints in ``tmp_path/state``."""
    text = f"[general]\nstate_dir = {tmp_path}/state\n\n[pipeline:P]\ncomponents = In, Out\n"
    text += textwrap.dedent(pipeline)
    text += "\n[pipeline:P:In]\ntype = core.FileSource\n" + textwrap.dedent(source)
    text += "\n[pipeline:P:Out]\ntype = core.FileSink\n" + textwrap.dedent(sink)
    return make_app(write_conf(tmp_path, text))


def input_file(tmp_path: Path, count: int) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(f'{{"seq": {n}, "pad": "{"x" * 80}"}}\n' for n in range(count)))
    return path


async def run_pipeline(app: bspump.BSPumpApplication) -> int:
    """Run pipeline P until it stops, without the checks an application may make before starting: the faults
    these tests make (a folder, a broken link, a read-only disk) may as well appear after those checks."""
    app.build_declared()
    pipeline = app.pump_service.pipelines["P"]
    await pipeline.start()
    await asyncio.wait_for(pipeline.wait_finished(), 10)
    return app.exit_code


def sink_of(app: bspump.BSPumpApplication) -> bspump.FileSink:
    sink = app.pump_service.pipelines["P"].sink
    assert isinstance(sink, bspump.FileSink)
    return sink


async def test_a_disk_that_fills_up_and_frees_again_gets_every_event_once_and_no_torn_line(
    tmp_path: Path, tmpfs: Path
) -> None:
    """Defect 1 of issue 9: events written twice and a torn line after the disk was freed, exit 0."""
    count = 20_000
    source = input_file(tmp_path, count)
    filler = tmpfs / "filler"
    free = os.statvfs(tmpfs).f_bavail * os.statvfs(tmpfs).f_frsize
    filler.write_bytes(b"\0" * (free - 600 * 1024))  # room for ~6,000 of the ~2 MB of lines
    output = tmpfs / "out.jsonl"
    app = copy_app(tmp_path, f"path = {source}\nbatch_size = 700\n",
                   f"path = {output}\nretry_timeout = 30s\n",
                   "retry_backoff = 20ms\nretry_backoff_max = 100ms\n")
    running = asyncio.create_task(run_app(app, timeout=30))
    await wait_for(lambda: app.pump_service.pipelines and sink_of(app).write_errors >= 2, timeout=10)
    assert output.stat().st_size < count * 100  # the disk is full: not everything could be written
    filler.unlink()
    assert await running == 0

    data = output.read_bytes()
    assert data.endswith(b"\n")
    lines = data.split(b"\n")[:-1]
    seqs = [json.loads(line)["seq"] for line in lines]  # a torn line would not parse
    assert seqs == list(range(count))  # every event exactly once, in order
    metrics = app.pump_service.pipelines["P"].metrics()
    assert metrics["out"] == len(lines) == count and metrics["errors"] == 0


def test_dev_full_stops_the_run_with_exit_code_1_and_out_0(tmp_path: Path) -> None:
    """Defect 2 of issue 9: a write that always fails was retried for ever, then reported 'out 10,000'."""
    source = input_file(tmp_path, 10)
    conf = write_conf(tmp_path, textwrap.dedent(f"""\
        [general]
        state_dir = {tmp_path}/state
        [pipeline:P:In]
        type = core.FileSource
        path = {source}
        [pipeline:P:Out]
        type = core.FileSink
        path = /dev/full
        """))
    result = subprocess.run([sys.executable, "-m", "bspump.cli", "run", str(conf)], capture_output=True,
                            text=True, timeout=30, check=False,
                            env={**os.environ, "PYTHONPATH": str(SRC)})
    assert result.returncode == 1, result.stderr
    assert "summary: events in 10, out 0," in result.stderr
    assert "No space left on device" in result.stderr and "Traceback" not in result.stderr


async def test_dev_full_under_skip_counts_every_event_as_an_error(tmp_path: Path) -> None:
    source = input_file(tmp_path, 10)
    app = copy_app(tmp_path, f"path = {source}\n", "path = /dev/full\n", "error_policy = skip\n")
    assert await run_app(app) == 0
    metrics = app.pump_service.pipelines["P"].metrics()
    assert (metrics["in"], metrics["out"], metrics["errors"], metrics["dropped"]) == (10, 0, 10, 10)


def broken_link(tmp_path: Path) -> Path:
    link = tmp_path / "out.jsonl"
    link.symlink_to(tmp_path / "no-such-folder" / "out.jsonl")
    return link


@pytest.mark.parametrize(("fault", "errno_name"), [("folder", "EISDIR"), ("broken link", "ENOENT")])
async def test_an_output_that_cannot_be_opened_fails_every_write_and_stops_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fault: str, errno_name: str
) -> None:
    source = input_file(tmp_path, 10)
    output = tmp_path / "out.jsonl"
    if fault == "folder":
        output.mkdir()
    else:
        broken_link(tmp_path)
    app = copy_app(tmp_path, f"path = {source}\n", f"path = {output}\n")
    assert await run_pipeline(app) == 1
    metrics = app.pump_service.pipelines["P"].metrics()
    assert metrics["out"] == 0
    assert sink_of(app).write_errors == 1  # permanent: no retry
    assert not any("retrying" in r.getMessage() for r in caplog.records)
    stops = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(os.strerror(getattr(__import__("errno"), errno_name)) in message for message in stops)


async def test_a_read_only_file_system_meets_the_policy_at_once(tmp_path: Path, tmpfs: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    source = input_file(tmp_path, 10)
    app = copy_app(tmp_path, f"path = {source}\n", f"path = {tmpfs}/out.jsonl\n", "error_policy = skip\n")
    with pytest.raises(bspump.ConfigError, match="is on a read-only file system"):
        app.build_declared()
        sink_of(app).preflight()
    assert await run_pipeline(app) == 0
    metrics = app.pump_service.pipelines["P"].metrics()
    assert (metrics["out"], metrics["errors"]) == (0, 10)
    assert sink_of(app).write_errors == 1


async def test_appending_cuts_off_a_line_left_torn_by_a_killed_run(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    output = tmp_path / "out.txt"
    output.write_bytes(b"one\ntwo\nthr")
    source = tmp_path / "in.txt"
    source.write_text("three\nfour\n")
    app = copy_app(tmp_path, f"path = {source}\nformat = text\n", f"path = {output}\nformat = text\n")
    assert await run_app(app) == 0
    assert output.read_bytes() == b"one\ntwo\nthree\nfour\n"
    assert any("ended with an unterminated line of 3 bytes" in r.getMessage() for r in caplog.records)


async def test_truncate_mode_empties_the_file_once(tmp_path: Path) -> None:
    output = tmp_path / "sub" / "out.txt"
    output.parent.mkdir()
    output.write_text("old\n")
    source = tmp_path / "in.txt"
    source.write_text("new\n")
    app = copy_app(tmp_path, f"path = {source}\nformat = text\n", f"path = {output}\nformat = text\n"
                                                                   "mode = truncate\n")
    assert await run_app(app) == 0
    assert output.read_text() == "new\n"


def test_preflight_checks_the_output_without_creating_it(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    (tmp_path / "folder").mkdir()
    cases = {
        tmp_path / "folder": "is a folder; give the path of a file in it",
        tmp_path / "a-file" / "out.jsonl": "is on the way to the file but is not a folder",
    }
    for path, message in cases.items():
        app = copy_app(tmp_path, f"path = {tmp_path}/in.jsonl\n", f"path = {path}\n")
        app.build_declared()
        with pytest.raises(bspump.ConfigError, match=message) as info:
            sink_of(app).preflight()
        assert "[pipeline:P:Out] path:" in str(info.value)
    for path in (tmp_path / "new" / "deeper" / "out.jsonl", Path("/dev/full"), tmp_path / "a-file"):
        app = copy_app(tmp_path, f"path = {tmp_path}/in.jsonl\n", f"path = {path}\n")
        app.build_declared()
        sink_of(app).preflight()  # no error
    assert not (tmp_path / "new").exists()
    broken_link(tmp_path)
    app = copy_app(tmp_path, f"path = {tmp_path}/in.jsonl\n", f"path = {tmp_path}/out.jsonl\n")
    app.build_declared()
    with pytest.raises(bspump.ConfigError, match=r"is a symbolic link into .*no-such-folder'"):
        sink_of(app).preflight()


def test_concurrent_writes_are_refused(tmp_path: Path) -> None:
    app = copy_app(tmp_path, f"path = {tmp_path}/in.jsonl\n", f"path = {tmp_path}/o\nconcurrency = 2\n")
    with pytest.raises(bspump.ConfigError, match=r"\[pipeline:P:Out\] concurrency: must be 1"):
        app.build_declared()


async def test_a_fifo_without_a_reader_is_retried_and_stop_is_never_kept_waiting(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    source = input_file(tmp_path, 10)
    app = copy_app(tmp_path, f"path = {source}\n", f"path = {fifo}\nretry_timeout = 0\n",
                   "retry_backoff = 10ms\nretry_backoff_max = 20ms\ndrain_timeout = 200ms\n")
    running = asyncio.create_task(run_app(app))
    try:
        await wait_for(lambda: app.pump_service.pipelines and sink_of(app).write_errors >= 3)
        app.stop()
        assert await running == 0
    finally:  # a regression that blocks in open() fails here instead of hanging the test run
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
    assert app.pump_service.pipelines["P"].metrics()["out"] == 0
