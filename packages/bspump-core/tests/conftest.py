"""Fixtures of bspump-core's unit tests. The helpers (applications without plugins or a cwd pipelines.conf,
a bounded way to run them, small recording sources and sinks) live in ``bspump.testing``, published with the
core for connector authors; they are re-exported here for the tests' ``from conftest import ...``."""

from __future__ import annotations

import logging
import signal
import subprocess
from typing import Any

import pytest

import bspump
from bspump.testing import (  # noqa: F401 -- re-exported for the test modules
    RUN_TIMEOUT,
    CountingSource,
    SlowSink,
    make_app,
    run_app,
    run_until,
    wait_for,
    write_conf,
)


def sigterm_and_wait(process: subprocess.Popen[Any], timeout: float = 5.0) -> int | None:
    """SIGTERM ``process`` and return its exit code, or None if it did not end within ``timeout`` (it is
    then killed, so that a failing test never leaves it behind)."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture
def app() -> bspump.BSPumpApplication:
    return make_app()


@pytest.fixture
def svc(app: bspump.BSPumpApplication) -> bspump.PumpService:
    return app.get_service("bspump.PumpService")


@pytest.fixture(autouse=True)
def _quiet_bspump_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bspump")
