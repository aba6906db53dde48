"""Testing help published with the core: helpers for tests of pipelines, and the conformance kit every
connector passes against its real server (:class:`ConnectorConformance`; needs pytest)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .helpers import RUN_TIMEOUT, CountingSource, SlowSink, make_app, run_app, run_until, wait_for, write_conf

if TYPE_CHECKING:  # imported on first use (it needs pytest); type checkers see the real class
    from .conformance import ConnectorConformance

__all__ = [
    "RUN_TIMEOUT",
    "ConnectorConformance",
    "CountingSource",
    "SlowSink",
    "make_app",
    "run_app",
    "run_until",
    "wait_for",
    "write_conf",
]


def __getattr__(name: str) -> Any:
    # The kit imports pytest; the helpers do not need it.
    if name in ("ConnectorConformance", "conformance"):
        module = importlib.import_module(f"{__name__}.conformance")
        return module if name == "conformance" else module.ConnectorConformance
    raise AttributeError(f"module 'bspump.testing' has no attribute {name!r}")
