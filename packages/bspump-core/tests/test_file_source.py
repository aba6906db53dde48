"""FileSource: positions through the checkpoint store, faults in the data as event errors, bounded lines,
the unterminated last line, stop interrupting a FIFO, preflight and one-line start-up errors."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import make_app, run_app, wait_for, write_conf

import bspump
from bspump.checkpoint import FileCheckpointStore


def declared(tmp_path: Path, source: str, *, policy: str = "stop", dead_letter: bool = False,
             sink: str = "type = core.MemorySink") -> bspump.BSPumpApplication:
    """An application with one pipeline P: In (a FileSource configured by ``source``) -> Out, and a
    FileSink DL receiving dead letters when ``dead_letter``; checkpoints go to ``tmp_path/state``."""
    text = textwrap.dedent(f"""\
        [general]
        state_dir = {tmp_path}/state

        [pipeline:P]
        error_policy = {"dead-letter" if dead_letter else policy}
        components = In, Out
        {"dead_letter = DL" if dead_letter else ""}

        [pipeline:P:In]
        type = core.FileSource
        """) + textwrap.dedent(source) + f"\n[pipeline:P:Out]\n{sink}\n"
    if dead_letter:
        text += f"\n[pipeline:P:DL]\ntype = core.FileSink\npath = {tmp_path}/dead.jsonl\n"
    return make_app(write_conf(tmp_path, text))


def checkpoint(tmp_path: Path, key: str = "P.In") -> dict[str, Any]:
    path = FileCheckpointStore(tmp_path / "state").path_of(key)
    return json.loads(path.read_text()) if path.exists() else {}


def events_of(app: bspump.BSPumpApplication) -> list[Any]:
    sink = app.pump_service.pipelines["P"].sink
    assert isinstance(sink, bspump.MemorySink)
    return sink.events


def source_of(app: bspump.BSPumpApplication) -> bspump.FileSource:
    source = app.pump_service.pipelines["P"].sources[0]
    assert isinstance(source, bspump.FileSource)
    return source


# -- positions -------------------------------------------------------------------------------------------
async def test_commits_the_offset_after_the_last_line_and_the_next_run_continues_there(tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text("".join(f'{{"n": {n}}}\n' for n in range(5)))
    app = declared(tmp_path, f"path = {data}\nbatch_size = 2\n")
    assert await run_app(app) == 0
    assert events_of(app) == [{"n": n} for n in range(5)]
    info = data.stat()
    assert checkpoint(tmp_path) == {
        str(data): {"offset": info.st_size, "line": 5, "dev": info.st_dev, "ino": info.st_ino}}

    with data.open("a") as handle:
        handle.write('{"n": 5}\n{"n": 6}\n')
    app = declared(tmp_path, f"path = {data}\n")
    assert await run_app(app) == 0
    assert events_of(app) == [{"n": 5}, {"n": 6}]
    assert source_of(app).started_at == bspump.embedded.file.ResumePoint(info.st_size, 5, 0)
    assert checkpoint(tmp_path)[str(data)]["line"] == 7


class GatedSink(bspump.AsyncSink):
    """An external system that takes the first batch, then holds every write until ``gate`` is set."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.written: list[Any] = []
        self.gate = asyncio.Event()

    async def write(self, batch: bspump.Batch) -> None:
        if self.written:
            await self.gate.wait()
        self.written.extend(batch.events)


class Copy(bspump.Pipeline):
    def __init__(self, app: bspump.BSPumpApplication, path: Path) -> None:
        super().__init__(app, "P", config={"max_in_flight": 40})
        self.build(bspump.FileSource(app, self, id="In", config={"path": str(path), "batch_size": 10,
                                                                 "format": "text"}),
                   GatedSink(app, self, id="Out"))


async def test_a_graceful_stop_commits_at_drain_and_the_next_run_reads_exactly_the_rest(tmp_path: Path) -> None:
    data = tmp_path / "in.txt"
    lines = [f"line {n}" for n in range(1000)]
    data.write_text("".join(f"{line}\n" for line in lines))
    conf = write_conf(tmp_path, "[general]\nstate_dir = state\n")

    app = make_app(conf)
    first = app.pump_service.add_pipeline(Copy(app, data))
    running = asyncio.create_task(run_app(app))
    sink = first.sink
    assert isinstance(sink, GatedSink)
    await wait_for(lambda: len(sink.written) == 10 and not first.ready)  # throttled: events in flight
    app.stop()
    sink.gate.set()  # the in-flight events get written while the pipeline drains
    assert await running == 0
    taken = list(sink.written)
    assert 10 < len(taken) < 1000
    saved = checkpoint(tmp_path)[str(data)]
    assert saved["line"] == len(taken)
    assert saved["offset"] == sum(len(line) + 1 for line in taken)

    app = make_app(conf)
    second = app.pump_service.add_pipeline(Copy(app, data))
    assert isinstance(second.sink, GatedSink)
    second.sink.gate.set()
    assert await run_app(app) == 0
    assert second.sources[0].started_at.offset == saved["offset"]  # type: ignore[attr-defined]
    assert taken + second.sink.written == lines  # every line once: nothing lost, nothing read twice


@pytest.mark.parametrize("change", ["replaced", "truncated"])
async def test_a_replaced_or_truncated_file_is_read_from_the_beginning_with_one_line_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, change: str
) -> None:
    data = tmp_path / "in.txt"
    data.write_text("a\nb\nc\n")
    assert await run_app(declared(tmp_path, f"path = {data}\nformat = text\n")) == 0
    if change == "replaced":
        fresh = tmp_path / "new.txt"
        fresh.write_text("x\ny\nz\nw\n")
        fresh.replace(data)  # another inode under the same name, longer than the checkpoint's offset
        expected, why = ["x", "y", "z", "w"], "another device or inode"
    else:
        data.write_text("q\n")  # same inode, shorter than the offset
        expected, why = ["q"], "shorter (2 bytes) than the checkpoint's offset 6 (truncated)"
    caplog.clear()
    app = declared(tmp_path, f"path = {data}\nformat = text\n")
    assert await run_app(app) == 0
    assert events_of(app) == expected
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.getMessage().startswith("P.In: reading ") and why in warning.getMessage()
    assert "\n" not in warning.getMessage()


async def test_checkpoint_false_reads_the_whole_file_every_time(tmp_path: Path) -> None:
    data = tmp_path / "in.txt"
    data.write_text("a\nb\n")
    for _ in range(2):
        app = declared(tmp_path, f"path = {data}\nformat = text\ncheckpoint = false\n")
        assert await run_app(app) == 0
        assert events_of(app) == ["a", "b"]
    assert checkpoint(tmp_path) == {}


# -- the last line ---------------------------------------------------------------------------------------
async def test_an_unterminated_last_line_is_emitted_once_and_again_only_once_completed(tmp_path: Path) -> None:
    data = tmp_path / "in.txt"
    data.write_bytes(b"a\nb")
    app = declared(tmp_path, f"path = {data}\nformat = text\n")
    assert await run_app(app) == 0
    assert events_of(app) == ["a", "b"]
    assert checkpoint(tmp_path)[str(data)] | {"dev": 0, "ino": 0} == {
        "offset": 2, "line": 1, "tail": 1, "dev": 0, "ino": 0}

    app = declared(tmp_path, f"path = {data}\nformat = text\n")  # unchanged: the tail was delivered
    assert await run_app(app) == 0
    assert events_of(app) == []

    with data.open("ab") as handle:  # the writer finishes its line and writes another
        handle.write(b"c\nd\n")
    app = declared(tmp_path, f"path = {data}\nformat = text\n")
    assert await run_app(app) == 0
    assert events_of(app) == ["bc", "d"]  # the completed line again, in full
    assert "tail" not in checkpoint(tmp_path)[str(data)]


# -- faults in the data ----------------------------------------------------------------------------------
async def test_a_line_that_does_not_decode_is_skipped_and_good_lines_flow(tmp_path: Path) -> None:
    data = tmp_path / "x.ndjson"
    data.write_bytes(b'{"i":1}\n{"i":"\xff"}\n{"i":3}\n')
    app = declared(tmp_path, f"path = {data}\n", policy="skip")
    assert await run_app(app) == 0
    assert events_of(app) == [{"i": 1}, {"i": 3}]
    metrics = app.pump_service.pipelines["P"].metrics()
    assert (metrics["in"], metrics["out"], metrics["errors"]) == (3, 2, 1)
    assert checkpoint(tmp_path)[str(data)]["offset"] == data.stat().st_size  # skipped lines are behind us


async def test_an_undecodable_line_is_dead_lettered_with_its_exact_bytes(tmp_path: Path) -> None:
    data = tmp_path / "x.ndjson"
    data.write_bytes(b'{"i":1}\n{"i":"\xff"}\n')
    app = declared(tmp_path, f"path = {data}\n", dead_letter=True)
    assert await run_app(app) == 0
    assert events_of(app) == [{"i": 1}]
    [letter] = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert base64.b64decode(letter["event_base64"]) == b'{"i":"\xff"}'
    assert letter["event"] == '{"i":"\\xff"}'
    assert letter["error_type"] == "UnicodeDecodeError" and letter["error_component"] == "P.In"
    assert (letter["path"], letter["line"], letter["offset"]) == (str(data), 2, 8)


async def test_an_undecodable_line_under_stop_ends_the_run_with_one_line_naming_the_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "x.txt"
    data.write_bytes(b"fine\n\xff\xfe\n")
    app = declared(tmp_path, f"path = {data}\nformat = text\n")
    assert await run_app(app) == 1
    [error] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert f"path='{data}', line=2" in error.getMessage() and "UnicodeDecodeError" in error.getMessage()
    assert error.exc_info is None


async def test_a_line_over_max_line_bytes_is_dead_lettered_with_a_bounded_prefix(tmp_path: Path) -> None:
    data = tmp_path / "x.txt"
    data.write_text("short\n" + "y" * 5000 + "\nafter\n")
    app = declared(tmp_path, f"path = {data}\nformat = text\nmax_line_bytes = 2048\n", dead_letter=True)
    assert await run_app(app) == 0
    assert events_of(app) == ["short", "after"]
    [letter] = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert letter["event"] == "y" * 1024
    assert "line is 5,000 bytes long, over max_line_bytes = 2048" in letter["error"]
    assert (letter["line"], letter["offset"]) == (2, 6)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("max_line_bytes", "0", "max_line_bytes: expected an integer from 64 to 1073741824, got '0'"),
    ("batch_size", "0", "batch_size: expected an integer from 1 to 1000000, got '0'"),
    ("encoding", "utf-16", "encoding: utf-16 cannot be read line by line here"),
    ("encoding", "klingon", "encoding: unknown encoding 'klingon'"),
    ("format", "xml", "format: expected one of text, json, got 'xml'"),
])
def test_settings_out_of_range_name_file_line_section_and_key(tmp_path: Path, key: str, value: str,
                                                              message: str) -> None:
    with pytest.raises(bspump.ConfigError) as info:
        declared(tmp_path, f"path = {tmp_path}/in.txt\n{key} = {value}\n").build_declared()
    assert str(info.value).startswith(f"{tmp_path}/pipelines.conf:") and message in str(info.value)
    assert "[pipeline:P:In]" in str(info.value)


# -- start-up --------------------------------------------------------------------------------------------
def test_preflight_checks_the_input_without_reading_it(tmp_path: Path) -> None:
    app = declared(tmp_path, f"path = {tmp_path}/missing.jsonl\n")
    app.build_declared()
    source = source_of(app)
    with pytest.raises(bspump.ConfigError, match=r"\[pipeline:P:In\] path: '.*missing.jsonl' does not exist$"):
        source.preflight()
    for path, message in ((tmp_path, "is a folder, not a file"),
                          (tmp_path / "sock", "is a socket")):
        if path.name == "sock":
            import socket
            server = socket.socket(socket.AF_UNIX)
            server.bind(str(path))
        app = declared(tmp_path, f"path = {path}\n")
        app.build_declared()
        with pytest.raises(bspump.ConfigError, match=message):
            source_of(app).preflight()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "ok.jsonl").write_text("{}\n")
    for good in (fifo, Path("/dev/null"), tmp_path / "ok.jsonl"):
        app = declared(tmp_path, f"path = {good}\n")
        app.build_declared()
        source_of(app).preflight()  # no error


@pytest.mark.parametrize("path", ["in\0.jsonl", "x" * 5_000_000, "a/" + "n" * 300 + "/b"])
def test_a_path_with_a_nul_byte_or_too_long_is_a_short_config_error(tmp_path: Path, path: str) -> None:
    app = make_app(write_conf(tmp_path, "[general]\nstate_dir = s\n"))
    pipeline = bspump.Pipeline(app, "P")
    with pytest.raises(bspump.ConfigError) as info:
        bspump.FileSource(app, pipeline, id="In", config={"path": path})
    message = str(info.value)
    assert message.startswith("[pipeline:P:In] path: ") and len(message) < 250 and "\n" not in message
    for sink_or_lookup in (lambda: bspump.FileSink(app, pipeline, id="Out", config={"path": path}),
                           lambda: bspump.FileLookup(app, "L", config={"path": path})):
        with pytest.raises(bspump.ConfigError) as info:
            sink_or_lookup()
        assert len(str(info.value)) < 250


async def test_a_missing_input_file_at_run_time_is_one_line_without_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gone = tmp_path / "gone.jsonl"
    gone.write_bytes(b"")
    app = declared(tmp_path, f"path = {gone}\n")
    [pipeline] = app.build_declared()
    source = pipeline.sources[0]
    checked = source.preflight

    def vanishes_after_the_check() -> None:  # the file goes away between preflight and the open
        checked()
        gone.unlink()

    source.preflight = vanishes_after_the_check  # type: ignore[method-assign]
    assert await run_app(app) == 1
    [error] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert error.exc_info is None and "\n" not in error.getMessage()
    assert f"[pipeline:P:In] path: cannot open '{tmp_path}/gone.jsonl': No such file or directory" in \
        error.getMessage()


# -- FIFOs -----------------------------------------------------------------------------------------------
def release_fifo(fifo: Path, mode: int) -> None:
    """Open the other end of ``fifo`` for a moment: ends an open() that a regression left blocked in a
    thread, so that a failing test fails instead of hanging the test run."""
    try:
        os.close(os.open(fifo, mode | os.O_NONBLOCK))
    except OSError:
        pass  # nobody waits on the other end


async def test_a_fifo_is_read_once_a_writer_comes_and_ends_when_it_leaves(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    app = declared(tmp_path, f"path = {fifo}\nformat = text\n")
    running = asyncio.create_task(run_app(app))
    try:
        await wait_for(lambda: app.pump_service.pipelines and source_of(app).reader is not None)
        with open(fifo, "wb") as writer:  # the source already opened it, so this does not block
            writer.write(b"one\ntwo\nthree")
        assert await running == 0
    finally:
        release_fifo(fifo, os.O_WRONLY)
    assert events_of(app) == ["one", "two", "three"]
    assert checkpoint(tmp_path) == {}  # a FIFO cannot be read again: no checkpoint


def test_stop_ends_a_source_waiting_on_a_fifo_without_a_writer(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """Defect 6 of issue 9: the open (and then the read) blocked a worker thread, so stop never ended."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    app = declared(tmp_path, f"path = {fifo}\n")
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(app.run()), daemon=True)
    runner.start()
    waiting = threading.Event()
    for _ in range(200):  # up to 2 s for the source to reach its wait (it logs when it does)
        if any("waiting for a writer" in r.getMessage() for r in caplog.records):
            waiting.set()
            break
        threading.Event().wait(0.01)
    app.stop()
    runner.join(timeout=5)
    stuck = runner.is_alive()
    if stuck:  # release the blocked thread so that the test process can end
        release_fifo(fifo, os.O_WRONLY)
        runner.join(timeout=5)
    assert waiting.is_set()
    assert not stuck, "stop did not end a source waiting on a FIFO without a writer"
    assert result == [0]
