"""Notebook helpers: ``from bspump.jupyter import *`` gives an application and what to drive it with.

Register with decorators (each calls the function with the application and keeps what it returns)::

    @register_connection
    def kafka_connection(app):
        return bspump.kafka.KafkaConnection(app, "KafkaConnection")

then ``start()`` runs the application in the background of the notebook's own event loop (the kernel stays
free), ``status()``, ``metrics()`` and ``sample("PipelineID")`` show what the pipelines do, ``await
wait_finished("PipelineID")`` or ``await until(condition)`` wait without blocking, and ``await
stop("PipelineID")`` or ``await stop()`` stop one pipeline or everything, gracefully.

The notebook's application keeps running when its pipelines have finished (a pipeline registered later starts
at once) and leaves SIGINT to the kernel. Re-running a registration cell replaces what it registered, as long
as that is not running. A pipeline that fails under ``error_policy = stop`` stops the application, as it does
outside a notebook (``status()`` shows the error). After ``stop()``, the next registration starts a new
application.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from .application import BSPumpApplication
from .connection import Connection
from .lookup import Lookup
from .pipeline import Pipeline

# `app` is created on first access (module __getattr__).
__all__ = [  # noqa: F822
    "app",
    "get_app",
    "metrics",
    "register_connection",
    "register_lookup",
    "register_pipeline",
    "sample",
    "start",
    "status",
    "stop",
    "until",
    "wait_finished",
]

log = logging.getLogger("bspump.jupyter")

T = TypeVar("T")

#: Recent events kept per pipeline for :func:`sample`.
SAMPLE_SIZE = 100


class Notebook:
    """The notebook's session: one application, its run in the background, a sample of each pipeline's events."""

    def __init__(self) -> None:
        self.app: BSPumpApplication | None = None
        self.task: asyncio.Task[int] | None = None
        self.samples: dict[str, deque[Any]] = {}
        self._background: set[asyncio.Future[Any]] = set()

    def get_app(self) -> BSPumpApplication:
        """The application, created on first use, and again once the previous one ended (a stopped application
        cannot run again; ``from bspump.jupyter import *`` in a cell run again then binds ``app`` to the new one).
        """
        if self.task is not None and self.task.done():
            self.app, self.task, self.samples = None, None, {}
        if self.app is None:
            self.app = BSPumpApplication(stop_when_finished=False, handle_signals=False)
        return self.app

    def _inspected(self) -> BSPumpApplication:
        """The application to report on: the last one, even when it has ended."""
        return self.app if self.app is not None else self.get_app()

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    # -- registration ---------------------------------------------------------------------------------------
    def register_connection(self, factory: Callable[[BSPumpApplication], Connection]) -> Connection:
        app = self.get_app()
        connection = factory(app)
        service = app.pump_service
        old = service.connections.get(connection.id)
        if old is not None:
            if self.running and old.users:
                raise RuntimeError(f"connection {connection.id!r} is in use by a running pipeline; "
                                   "await stop() first, then register it again")
            del service.connections[connection.id]
        # Opened by the first pipeline that uses it (also when the application is already running).
        return service.add_connection(connection)

    def register_lookup(self, factory: Callable[[BSPumpApplication], Lookup]) -> Lookup:
        app = self.get_app()
        lookup = factory(app)
        service = app.pump_service
        if lookup.id in service.lookups:
            if self.running:
                raise RuntimeError(f"lookup {lookup.id!r} is loaded in the running application; "
                                   "await stop() first, then register it again")
            del service.lookups[lookup.id]
        service.add_lookup(lookup)
        if self.running:  # the PumpService loads lookups when it starts: this one comes later
            self._in_background(lookup.start(), f"lookup {lookup.id!r} failed to load")
        return lookup

    def register_pipeline(self, factory: Callable[[BSPumpApplication], Pipeline]) -> Pipeline:
        app = self.get_app()
        pipeline = factory(app)
        service = app.pump_service
        old = service.pipelines.get(pipeline.id)
        if old is not None:
            if self.running and not old.finished:  # running, or added to the running application and starting
                raise RuntimeError(f"pipeline {pipeline.id!r} is running; await stop({pipeline.id!r}) first, "
                                   "then register it again")
            del service.pipelines[pipeline.id]
        recent: deque[Any] = deque(maxlen=SAMPLE_SIZE)
        self.samples[pipeline.id] = recent
        pipeline.add_tap(recent.extend)
        return service.add_pipeline(pipeline)  # started at once when the application runs

    # -- running --------------------------------------------------------------------------------------------
    def start(self) -> asyncio.Task[int]:
        """Run the application in the background of the running event loop; returns the task (its result is
        the exit code). Already running: the same task."""
        if self.task is not None and not self.task.done():
            return self.task
        if self.task is not None:
            raise RuntimeError("the application has ended; run the registration cells again to start a new one")
        app = self.get_app()
        self.task = asyncio.get_running_loop().create_task(app.run_async(), name="bspump notebook")
        self.task.add_done_callback(_report_end)
        return self.task

    def stop(self, pipeline_id: str | None = None) -> asyncio.Future[Any]:
        """Stop one pipeline (it drains, its sink flushes, its positions commit) or, without an ID, the whole
        application. Returns something to ``await`` for the stop to complete (the application's exit code)."""
        if pipeline_id is not None:
            return self._in_background(self._pipeline(pipeline_id).stop(), f"stopping pipeline {pipeline_id!r}")
        if self.app is None:
            raise RuntimeError("nothing to stop: no pipeline was registered")
        self.app.stop()
        if self.task is None:  # never started: nothing runs, the next registration starts afresh
            self.app = None
            done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            done.set_result(0)
            return done
        return self.task

    async def wait_finished(self, pipeline_id: str, timeout: float | None = None) -> dict[str, Any]:
        """Wait until the pipeline finished (a finite source ran out, or it was stopped); its metrics."""
        pipeline = self._pipeline(pipeline_id)
        async with asyncio.timeout(timeout):
            await pipeline.wait_finished()
        return pipeline.metrics()

    # -- inspection -----------------------------------------------------------------------------------------
    def status(self) -> dict[str, dict[str, Any]]:
        """Per pipeline: its state, events in/out/dropped/errors, what pauses it, and the error it stopped on."""
        result: dict[str, dict[str, Any]] = {}
        for pipeline_id, pipeline in self._inspected().pump_service.pipelines.items():
            snapshot = pipeline.metrics()
            row = {key: snapshot.get(key) for key in ("state", "in", "out", "dropped", "errors", "in_flight")}
            row["throttles"] = snapshot.get("throttles", [])
            row["error"] = str(pipeline.error) if pipeline.error is not None else None
            result[pipeline_id] = row
        return result

    def metrics(self, pipeline_id: str | None = None) -> dict[str, Any]:
        """``Pipeline.metrics()`` of one pipeline, or of every pipeline by ID."""
        if pipeline_id is not None:
            return self._pipeline(pipeline_id).metrics()
        return {pid: p.metrics() for pid, p in self._inspected().pump_service.pipelines.items()}

    def sample(self, pipeline_id: str, n: int = 10) -> list[Any]:
        """The last ``n`` events (at most :data:`SAMPLE_SIZE`) the pipeline's processors handed to its sink."""
        self._pipeline(pipeline_id)
        recent = self.samples.get(pipeline_id)
        if recent is None:
            raise KeyError(f"pipeline {pipeline_id!r} was not registered with register_pipeline: no sample kept")
        return list(recent)[-n:] if n > 0 else []

    # -- helpers --------------------------------------------------------------------------------------------
    def _pipeline(self, pipeline_id: str) -> Pipeline:
        pipelines = self._inspected().pump_service.pipelines
        try:
            return pipelines[pipeline_id]
        except KeyError:
            known = ", ".join(sorted(pipelines)) or "none"
            raise KeyError(f"no pipeline {pipeline_id!r} (registered: {known})") from None

    def _in_background(self, work: Any, failure: str) -> asyncio.Future[Any]:
        """Run ``work`` as a task the session holds on to (the loop keeps only weak references), logging its
        failure; the caller may await it too."""
        task: asyncio.Future[Any] = asyncio.ensure_future(work)
        self._background.add(task)

        def done(finished: asyncio.Future[Any]) -> None:
            self._background.discard(task)
            if not finished.cancelled() and finished.exception() is not None:
                log.error("%s: %s", failure, finished.exception())

        task.add_done_callback(done)
        return task


def _report_end(task: asyncio.Task[int]) -> None:
    """A run that raised (a start-up failure) says so in the notebook's log instead of vanishing."""
    if not task.cancelled() and task.exception() is not None:
        log.error("the notebook's application stopped: %s", task.exception())


async def until(condition: Callable[[], bool], timeout: float = 30.0, interval: float = 0.05) -> None:
    """Wait until ``condition()`` is true, checking every ``interval`` seconds; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"the condition did not hold within {timeout}s")
        await asyncio.sleep(interval)


_notebook = Notebook()


def notebook() -> Notebook:
    """The session the module-level functions work on."""
    return _notebook


def reset() -> None:
    """Forget the session (its application, registrations and samples); tests start each from here."""
    global _notebook
    _notebook = Notebook()


def get_app() -> BSPumpApplication:
    """The notebook's application, created on first use."""
    return _notebook.get_app()


def __getattr__(name: str) -> Any:
    if name == "app":
        return _notebook.get_app()
    raise AttributeError(f"module 'bspump.jupyter' has no attribute {name!r}")


def register_connection(factory: Callable[[BSPumpApplication], Connection]) -> Connection:
    """Decorator: call ``factory(app)`` and add the connection it returns; the name then refers to it."""
    return _notebook.register_connection(factory)


def register_lookup(factory: Callable[[BSPumpApplication], Lookup]) -> Lookup:
    """Decorator: call ``factory(app)`` and add the lookup it returns (loaded at once when running)."""
    return _notebook.register_lookup(factory)


def register_pipeline(factory: Callable[[BSPumpApplication], Pipeline]) -> Pipeline:
    """Decorator: call ``factory(app)`` and add the pipeline it returns (started at once when running)."""
    return _notebook.register_pipeline(factory)


def start() -> asyncio.Task[int]:
    """Run the application in the background of the notebook's running event loop."""
    return _notebook.start()


def stop(pipeline_id: str | None = None) -> asyncio.Future[Any]:
    """Stop one pipeline, or the whole application; ``await`` the result to wait for the graceful stop."""
    return _notebook.stop(pipeline_id)


async def wait_finished(pipeline_id: str, timeout: float | None = None) -> dict[str, Any]:
    """Wait until a pipeline finished; returns its metrics."""
    return await _notebook.wait_finished(pipeline_id, timeout)


def status() -> dict[str, dict[str, Any]]:
    """State and counts of every pipeline."""
    return _notebook.status()


def metrics(pipeline_id: str | None = None) -> dict[str, Any]:
    """Metrics of one pipeline or of all of them."""
    return _notebook.metrics(pipeline_id)


def sample(pipeline_id: str, n: int = 10) -> list[Any]:
    """The last ``n`` events a pipeline handed to its sink."""
    return _notebook.sample(pipeline_id, n)
