"""Notebook helpers: ``from bspump.jupyter import *`` gives an ``app`` and registration decorators.

The application is created on first use; run it in the notebook's loop with ``await app.run_async()``
or in the background with ``start()``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from .application import BSPumpApplication
from .connection import Connection
from .lookup import Lookup
from .pipeline import Pipeline

# `app` is created on first access (module __getattr__).
__all__ = ["app", "register_connection", "register_lookup", "register_pipeline", "start", "stop"]  # noqa: F822

T = TypeVar("T")
_state: dict[str, Any] = {}


def get_app() -> BSPumpApplication:
    """The notebook's application, created on first use."""
    if "app" not in _state:
        _state["app"] = BSPumpApplication()
    return _state["app"]  # type: ignore[no-any-return]


def __getattr__(name: str) -> Any:
    if name == "app":
        return get_app()
    raise AttributeError(f"module 'bspump.jupyter' has no attribute {name!r}")


def register_connection(factory: Callable[[BSPumpApplication], Connection]) -> Connection:
    """Decorator: call ``factory(app)`` and add the connection it returns; the name then refers to it."""
    return get_app().pump_service.add_connection(factory(get_app()))


def register_lookup(factory: Callable[[BSPumpApplication], Lookup]) -> Lookup:
    """Decorator: call ``factory(app)`` and add the lookup it returns."""
    return get_app().pump_service.add_lookup(factory(get_app()))


def register_pipeline(factory: Callable[[BSPumpApplication], Pipeline]) -> Pipeline:
    """Decorator: call ``factory(app)`` and add the pipeline it returns."""
    return get_app().pump_service.add_pipeline(factory(get_app()))


def start() -> asyncio.Task[int]:
    """Run the application in the background of the notebook's running event loop."""
    task = asyncio.get_running_loop().create_task(get_app().run_async())
    _state["task"] = task
    return task


def stop() -> None:
    """Ask the background application to stop gracefully."""
    get_app().stop()
