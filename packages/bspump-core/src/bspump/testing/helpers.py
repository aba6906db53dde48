"""Helpers for tests of pipelines and connectors: applications isolated from the machine they run on, a
bounded way to run them, and small sources and sinks that record what happened.

Nothing here fakes the framework: the application, pipelines and connections are the real ones.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..application import BSPumpApplication
from ..async_sink import AsyncSink
from ..batch import Batch
from ..config import PipelinesConfig, load_config
from ..source import Source

#: Upper bound for one application run in a test; a hang fails the test instead of the test run.
RUN_TIMEOUT = 10.0


def make_app(config: PipelinesConfig | str | Path | None = None, environ: Mapping[str, str] | None = None,
             load_plugins: bool = False) -> BSPumpApplication:
    """An application that never picks up a stray ./pipelines.conf, the caller's environment or installed
    plugins (unless asked): ``environ`` replaces ``os.environ`` for interpolation and ``$BSPUMP_*``.
    Checkpoints go to a fresh temporary folder unless ``environ`` names ``BSPUMP_STATE_DIR``."""
    env = dict(environ or {})
    # A path, not a folder: the checkpoint store creates it only if a source saves a checkpoint.
    env.setdefault("BSPUMP_STATE_DIR", os.path.join(tempfile.gettempdir(), f"bspump-state-{uuid.uuid4().hex}"))
    if config is None:
        config = PipelinesConfig()
    elif not isinstance(config, PipelinesConfig):
        config = load_config(config, environ=env)
    return BSPumpApplication(config, environ=env, load_plugins=load_plugins)


def write_conf(folder: Path, text: str, name: str = "pipelines.conf") -> Path:
    """Write a configuration file into ``folder`` and return its path."""
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


async def run_app(app: BSPumpApplication, timeout: float = RUN_TIMEOUT) -> int:
    """Run the application in the current loop until it ends; fail if it takes longer than ``timeout``."""
    return await asyncio.wait_for(app.run_async(), timeout)


async def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, what: str | None = None, *,
                   interval: float = 0.002) -> None:
    """Poll ``predicate`` until it is true; ``AssertionError`` naming ``what`` after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"{what or predicate} not reached within {timeout}s")
        await asyncio.sleep(interval)


async def run_until(app: BSPumpApplication, predicate: Callable[[], Any], timeout: float = RUN_TIMEOUT,
                    what: str = "the condition", stop_timeout: float = 60.0) -> int:
    """Run the application until ``predicate`` holds, then stop it gracefully; returns its exit code.

    Fails if the application ends before (with its error, if it raised) or the condition is not reached.
    """
    task = asyncio.create_task(app.run_async())
    try:
        await wait_for(lambda: predicate() or task.done(), timeout, interval=0.01, what=what)
        if not predicate():
            task.result()  # its error, if it raised
            raise AssertionError(f"the application stopped before {what}")
    finally:
        app.stop()
        code = await asyncio.wait_for(task, stop_timeout)
    return code


class CountingSource(Source):
    """Emits consecutive integers in batches of ``batch_size``; endless unless ``limit`` is set."""

    def __init__(self, *args: Any, batch_size: int = 10, limit: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batch_size = batch_size
        self.limit = limit
        self.emitted = 0
        self.batches = 0

    async def main(self) -> None:
        n = 0
        while self.limit is None or n < self.limit:
            size = self.batch_size if self.limit is None else min(self.batch_size, self.limit - n)
            await self.emit(list(range(n, n + size)), {"source": "counting"})
            # Counted only after emit returned: the batch left the processors and reached the sink.
            n += size
            self.emitted += size
            self.batches += 1
            await asyncio.sleep(0)


class SlowSink(AsyncSink):
    """A sink whose external system takes ``delay`` seconds per batch; records what it wrote."""

    def __init__(self, *args: Any, delay: float = 0.01, log: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.delay = delay
        self.written: list[Any] = []
        self.log = log

    async def write(self, batch: Batch) -> None:
        await asyncio.sleep(self.delay)
        self.written.extend(batch.events)
        if self.log is not None:
            self.log.append(f"write {len(batch)}")
