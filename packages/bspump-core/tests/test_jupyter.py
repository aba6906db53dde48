"""The notebook helpers: the seed page's pattern (``from bspump.jupyter import *`` + ``@register_connection``)
with a custom connection in place of Kafka, executed as notebook cells inside a running event loop (as a kernel
runs them); starting, inspecting and stopping pipelines without blocking that loop.

The notebook in docs/notebooks/ is executed by a real kernel in ``nox -s notebooks``."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import bspump
import bspump.jupyter

CELL_1 = '''
from bspump.jupyter import *
import bspump


class NotebookConnection(bspump.Connection):
    async def connect(self):
        self.opened = True

    async def disconnect(self):
        self.opened = False


@register_connection
def my_connection(app):
    return NotebookConnection(app, "MyConnection")
'''

CELL_2 = '''
@register_pipeline
def pipeline(app):
    p = bspump.Pipeline(app, "Notebook")
    p.build(
        bspump.MemorySource(app, p, events=[1, 2, 3], connection="MyConnection"),
        bspump.MemorySink(app, p, connection="MyConnection"),
    )
    return p
'''

TICKS = '''
@register_pipeline
def endless(app):
    class Tick(bspump.TriggerSource):
        async def cycle(self):
            await self.emit([self.cycle_count])
    p = bspump.Pipeline(app, "Ticks")
    p.build(Tick(app, p, config={"interval": 0.005}), bspump.MemorySink(app, p))
    return p
'''


@pytest.fixture
def notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    monkeypatch.chdir(tmp_path)  # no stray pipelines.conf
    monkeypatch.delenv("BSPUMP_CONFIG", raising=False)
    bspump.jupyter.reset()
    yield {}
    bspump.jupyter.reset()


async def test_register_connection_and_run(notebook: dict[str, Any]) -> None:
    exec(CELL_1, notebook)
    exec(CELL_2, notebook)
    app = notebook["app"]
    assert app is bspump.jupyter.get_app()
    connection = notebook["my_connection"]  # the decorator leaves the connection under the function's name
    assert isinstance(connection, bspump.Connection) and connection.id == "MyConnection"
    assert app.get_service("bspump.PumpService").locate("MyConnection") is connection
    pipeline = notebook["pipeline"]
    task = notebook["start"]()
    metrics = await notebook["wait_finished"]("Notebook", timeout=10)
    assert metrics["in"] == metrics["out"] == 3
    assert pipeline.sink.events == [1, 2, 3]
    assert not task.done()  # the application outlives its finished pipelines, for the next cells
    assert await asyncio.wait_for(notebook["stop"](), 10) == 0
    assert connection.opened is False and connection.state is bspump.ConnectionState.CLOSED


async def test_start_returns_at_once_and_the_loop_stays_free(notebook: dict[str, Any]) -> None:
    exec(CELL_1, notebook)
    exec(TICKS, notebook)
    task = notebook["start"]()
    assert notebook["start"]() is task  # starting twice is the same run
    pipeline = notebook["endless"]
    ticks_seen = []
    while len(pipeline.sink.events) < 5:  # this coroutine runs between the ticks: nothing blocks the loop
        ticks_seen.append(len(pipeline.sink.events))
        await asyncio.sleep(0.002)
    assert len(ticks_seen) > 1
    assert await asyncio.wait_for(notebook["stop"](), 10) == 0
    assert pipeline.sink.events[:3] == [0, 1, 2]
    assert pipeline.state is bspump.PipelineState.FINISHED


async def test_inspect_metrics_status_and_a_sample(notebook: dict[str, Any]) -> None:
    exec(CELL_1, notebook)
    exec('''
@register_pipeline
def numbers(app):
    class Double(bspump.Processor):
        def process(self, context, event):
            return None if event % 10 == 0 else event * 2
    p = bspump.Pipeline(app, "Numbers")
    p.build(bspump.MemorySource(app, p, events=range(1, 501), config={"batch_size": 50}), Double(app, p),
            bspump.MemorySink(app, p))
    return p
''', notebook)
    notebook["start"]()
    await notebook["wait_finished"]("Numbers", timeout=10)
    recent = notebook["sample"]("Numbers", 5)
    assert recent == [990, 992, 994, 996, 998]  # the last events handed to the sink, after the processor
    assert len(notebook["sample"]("Numbers", 1000)) == bspump.jupyter.SAMPLE_SIZE
    status = notebook["status"]()["Numbers"]
    assert status["state"] == "finished" and status["in"] == 500 and status["out"] == 450
    assert status["dropped"] == 50 and status["error"] is None
    metrics = notebook["metrics"]()
    assert metrics["Numbers"]["components"]["Double"]["in"] == 500
    assert notebook["metrics"]("Numbers")["out"] == 450
    with pytest.raises(KeyError, match="no pipeline 'Nope' \\(registered: Numbers\\)"):
        notebook["sample"]("Nope")
    await notebook["stop"]()


async def test_a_pipeline_registered_while_running_starts_at_once(notebook: dict[str, Any]) -> None:
    exec(CELL_1, notebook)
    exec(TICKS, notebook)
    task = notebook["start"]()
    await notebook["until"](lambda: len(notebook["endless"].sink.events) >= 2, timeout=10)
    # A connection and a lookup registered after the start: the pipeline opens the one, the other loads.
    exec('''
class Later(bspump.Connection):
    async def connect(self):
        pass
    async def disconnect(self):
        pass

@register_connection
def later(app):
    return Later(app, "Later")

class Codes(bspump.Lookup):
    async def load(self):
        return {1: "one", 2: "two"}

@register_lookup
def codes(app):
    return Codes(app, "Codes")
''', notebook)
    await notebook["until"](lambda: notebook["codes"].loaded_at is not None, timeout=10)
    exec('''
@register_pipeline
def named(app):
    class Name(bspump.Processor):
        def process(self, context, event):
            return app.get_service("bspump.PumpService").locate("Codes")[event]
    p = bspump.Pipeline(app, "Named")
    p.build(bspump.MemorySource(app, p, events=[1, 2], connection="Later"), Name(app, p),
            bspump.MemorySink(app, p, connection="Later"))
    return p
''', notebook)
    await notebook["wait_finished"]("Named", timeout=10)
    assert notebook["named"].sink.events == ["one", "two"]
    assert notebook["later"].state is bspump.ConnectionState.READY
    # Stopping one pipeline leaves the others and the application running.
    await asyncio.wait_for(notebook["stop"]("Ticks"), 10)
    assert notebook["endless"].state is bspump.PipelineState.FINISHED and not task.done()
    assert await asyncio.wait_for(notebook["stop"](), 10) == 0


async def test_running_a_cell_again_replaces_what_is_not_running(notebook: dict[str, Any]) -> None:
    exec(CELL_1, notebook)
    exec(CELL_2, notebook)
    first = notebook["pipeline"]
    exec(CELL_1, notebook)  # the same connection ID again, before anything runs
    exec(CELL_2, notebook)
    assert notebook["pipeline"] is not first
    notebook["start"]()
    await notebook["wait_finished"]("Notebook", timeout=10)
    exec(CELL_2, notebook)  # the finished pipeline is replaced, and the new one runs
    await notebook["wait_finished"]("Notebook", timeout=10)
    assert notebook["pipeline"].sink.events == [1, 2, 3]
    exec(TICKS, notebook)
    with pytest.raises(RuntimeError, match="pipeline 'Ticks' is running; await stop\\('Ticks'\\) first"):
        exec(TICKS, notebook)
    assert await asyncio.wait_for(notebook["stop"](), 10) == 0
    with pytest.raises(RuntimeError, match="the application has ended"):
        notebook["start"]()
    exec(CELL_1, notebook)  # registering after the end starts a new application
    exec(CELL_2, notebook)
    assert notebook["app"] is bspump.jupyter.get_app() and not notebook["app"].running
    notebook["start"]()
    await notebook["wait_finished"]("Notebook", timeout=10)
    assert await asyncio.wait_for(notebook["stop"](), 10) == 0


async def test_the_notebook_leaves_sigint_to_the_kernel(notebook: dict[str, Any]) -> None:
    exec(CELL_1, notebook)
    exec(TICKS, notebook)
    before = signal.getsignal(signal.SIGINT)
    notebook["start"]()
    await notebook["until"](lambda: len(notebook["endless"].sink.events) >= 1, timeout=10)
    assert signal.getsignal(signal.SIGINT) is before
    await notebook["stop"]()


async def test_a_failing_start_is_reported(notebook: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    exec(CELL_1, notebook)
    exec('''
class Broken(bspump.Lookup):
    async def load(self):
        raise OSError("table is gone")

@register_lookup
def broken(app):
    return Broken(app, "Broken")
''', notebook)
    exec(CELL_2, notebook)
    task = notebook["start"]()
    with pytest.raises(Exception, match="table is gone"):
        await asyncio.wait_for(task, 10)
    await asyncio.sleep(0)  # the done callback runs
    assert "the notebook's application stopped" in caplog.text and "table is gone" in caplog.text


async def test_a_failed_pipeline_shows_its_error(notebook: dict[str, Any]) -> None:
    exec(CELL_1, notebook)
    exec('''
@register_pipeline
def failing(app):
    class Boom(bspump.Processor):
        def process(self, context, event):
            raise ValueError(f"bad event {event}")
    p = bspump.Pipeline(app, "Failing")
    p.build(bspump.MemorySource(app, p, events=[1]), Boom(app, p), bspump.MemorySink(app, p))
    return p
''', notebook)
    task = notebook["start"]()
    assert await asyncio.wait_for(task, 10) == 1  # error_policy = stop ends the application, as outside
    row = notebook["status"]()["Failing"]  # the ended application is still there to look at
    assert row["state"] == "failed" and "bad event 1" in row["error"] and row["errors"] == 1
    exec(CELL_1, notebook)  # the next registrations start afresh
    exec(CELL_2, notebook)
    assert list(notebook["status"]()) == ["Notebook"]
