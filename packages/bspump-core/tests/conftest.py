"""Shared helpers for bspump-core's unit tests: applications without plugins or a cwd pipelines.conf,
a bounded way to run them, and small fakes of *external* systems (never of the framework itself)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import bspump
from bspump.config import PipelinesConfig, load_config

#: Upper bound for any single application run in the suite; a hang fails the test instead of the run.
RUN_TIMEOUT = 10.0


def make_app(config: PipelinesConfig | str | Path | None = None, environ: dict[str, str] | None = None,
             load_plugins: bool = False) -> bspump.BSPumpApplication:
    """An application that never picks up a stray ./pipelines.conf or installed third-party plugins."""
    env = {} if environ is None else environ
    if config is None:
        config = PipelinesConfig()
    elif not isinstance(config, PipelinesConfig):
        config = load_config(config, environ=env)
    return bspump.BSPumpApplication(config, environ=env, load_plugins=load_plugins)


def write_conf(tmp_path: Path, text: str, name: str = "pipelines.conf") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


async def run_app(app: bspump.BSPumpApplication, timeout: float = RUN_TIMEOUT) -> int:
    """Run the application in the current loop; fail the test if it does not end in ``timeout``."""
    return await asyncio.wait_for(app.run_async(), timeout)


async def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.002) -> None:
    """Poll ``predicate`` until true; ``AssertionError`` on timeout (conditions, not speed)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not reached within {timeout}s: {predicate}")
        await asyncio.sleep(interval)


class CountingSource(bspump.Source):
    """Emits consecutive integers in batches; infinite unless ``limit`` is set. Records what it emitted."""

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
            events = list(range(n, n + size))
            await self.emit(events, {"source": "counting"})
            # Counted only after emit returned: the batch left the processors and reached the sink.
            n += size
            self.emitted += size
            self.batches += 1
            await asyncio.sleep(0)


class SlowSink(bspump.AsyncSink):
    """A sink whose external system takes ``delay`` seconds per batch; records what it wrote."""

    def __init__(self, *args: Any, delay: float = 0.01, log: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.delay = delay
        self.written: list[Any] = []
        self.log = log

    async def write(self, batch: bspump.Batch) -> None:
        await asyncio.sleep(self.delay)
        self.written.extend(batch.events)
        if self.log is not None:
            self.log.append(f"write {len(batch)}")


@pytest.fixture
def app() -> bspump.BSPumpApplication:
    return make_app()


@pytest.fixture
def svc(app: bspump.BSPumpApplication) -> bspump.PumpService:
    return app.get_service("bspump.PumpService")


@pytest.fixture(autouse=True)
def _quiet_bspump_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bspump")
