"""The seed page's Jupyter pattern (``from bspump.jupyter import *`` + ``@register_connection``), with a
custom connection in place of Kafka, executed as notebook cells."""

from __future__ import annotations

import asyncio
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


@pytest.fixture
def notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.chdir(tmp_path)  # no stray pipelines.conf
    monkeypatch.delenv("BSPUMP_CONFIG", raising=False)
    bspump.jupyter._state.clear()
    yield {}
    bspump.jupyter._state.clear()


async def test_jupyter_register_connection_and_run(notebook: dict[str, Any]) -> None:
    exec(CELL_1, notebook)
    exec(CELL_2, notebook)
    app = notebook["app"]
    assert app is bspump.jupyter.get_app()
    connection = notebook["my_connection"]  # the decorator leaves the connection under the function's name
    assert isinstance(connection, bspump.Connection) and connection.id == "MyConnection"
    assert app.get_service("bspump.PumpService").locate("MyConnection") is connection
    pipeline = notebook["pipeline"]
    task = bspump.jupyter.start()
    assert await asyncio.wait_for(task, 10) == 0  # the finite source ends the run
    assert pipeline.sink.events == [1, 2, 3]
    assert connection.opened is False and connection.state is bspump.ConnectionState.CLOSED


async def test_jupyter_stop_in_background(notebook: dict[str, Any]) -> None:
    exec(CELL_1, notebook)
    exec("import asyncio\n@register_pipeline\ndef endless(app):\n"
         "    class Tick(bspump.TriggerSource):\n"
         "        async def cycle(self):\n"
         "            await self.emit([self.cycle_count])\n"
         "    p = bspump.Pipeline(app, 'Ticks')\n"
         "    p.build(Tick(app, p, config={'interval': 0.005}), bspump.MemorySink(app, p))\n"
         "    return p\n", notebook)
    task = bspump.jupyter.start()
    pipeline = notebook["endless"]
    while len(pipeline.sink.events) < 3:
        await asyncio.sleep(0.005)
    bspump.jupyter.stop()
    assert await asyncio.wait_for(task, 10) == 0
    assert pipeline.sink.events[:3] == [0, 1, 2]
