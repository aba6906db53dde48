"""BSPumpApplication: owns the event loop, signals, services and the order of start and stop."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .checkpoint import CheckpointStore, FileCheckpointStore
from .config import ComponentConfig, PipelinesConfig, load_config
from .config.secrets import SecretMask
from .declare import declare_connections_and_lookups, declare_pipelines, unused_sections
from .pipeline import Pipeline
from .plugins import Plugins
from .registry import TypeRegistry
from .secret_logging import masked_logs
from .service import PumpService

if TYPE_CHECKING:
    from .web import WebServer

log = logging.getLogger("bspump.application")

ENV_CONFIG = "BSPUMP_CONFIG"
ENV_STATE_DIR = "BSPUMP_STATE_DIR"
#: Where checkpoints go when neither ``[general] state_dir`` nor ``$BSPUMP_STATE_DIR`` says otherwise.
DEFAULT_STATE_DIR = ".bspump-state"


class BSPumpApplication:
    """The application: create it, register connections and pipelines, then call :meth:`run`.

    ``config`` is the path of a pipelines.conf (or a loaded :class:`~bspump.config.PipelinesConfig`);
    without it, ``$BSPUMP_CONFIG`` or a ``pipelines.conf`` in the working directory is used if present.
    ``load_plugins=False`` skips installed plugins (core types stay available). SIGINT and SIGTERM stop
    gracefully: sources stop, in-flight events drain, sinks flush, positions commit, connections close.
    """

    #: Keys of ``[general]``: ``state_dir`` is the folder of the default checkpoint store.
    GeneralDefaults: dict[str, Any] = {"state_dir": ""}

    def __init__(
        self,
        config: str | os.PathLike[str] | PipelinesConfig | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        load_plugins: bool = True,
    ) -> None:
        self.environ: Mapping[str, str] = os.environ if environ is None else environ
        self.config = _load(config, self.environ)
        #: Every configured secret value (from the file and from ``config=`` of components built in code):
        #: masked in logs, errors, ``bspump check`` and ``/metrics``.
        self.secrets = SecretMask.from_config(self.config)
        self.general = ComponentConfig(self.GeneralDefaults, self.config.section("general"), label="general")
        self._checkpoints: CheckpointStore | None = None
        self.plugins = Plugins(load_entry_points=load_plugins, environ=self.environ)
        self.pump_service = PumpService(self)
        self._services: dict[str, Any] = {PumpService.name: self.pump_service}
        self.exit_code = 0
        self.running = False
        self.stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._declared = False
        self._pending_starts: list[asyncio.Task[None]] = []
        self.web: WebServer | None = None
        if self.config.section("web") is not None:
            from .web import WebServer  # deferred: prometheus-client costs ~80 ms to import

            self.web = WebServer.from_config(self)
            if self.web is not None:
                self.web.mask = self.secrets.mask
        declare_connections_and_lookups(self)
        self.plugins.extend_application(self)

    @property
    def checkpoints(self) -> CheckpointStore:
        """Where sources keep positions their external system cannot keep (see :mod:`bspump.checkpoint`).

        By default a :class:`~bspump.checkpoint.FileCheckpointStore` in ``state_dir`` of ``[general]`` (a
        relative path is taken from the configuration file's folder), else ``$BSPUMP_STATE_DIR``, else
        ``.bspump-state`` in the working directory. Assign another store before the application runs to
        keep checkpoints elsewhere.
        """
        if self._checkpoints is None:
            directory = (self.general.getpath("state_dir", "") or self.environ.get(ENV_STATE_DIR)
                         or DEFAULT_STATE_DIR)
            self._checkpoints = FileCheckpointStore(directory)
        return self._checkpoints

    @checkpoints.setter
    def checkpoints(self, store: CheckpointStore) -> None:
        self._checkpoints = store

    @property
    def registry(self) -> TypeRegistry:
        """Named types registered by plugins."""
        return self.plugins.registry

    def get_service(self, name: str) -> Any:
        """A service by name, e.g. ``"bspump.PumpService"``."""
        try:
            return self._services[name]
        except KeyError:
            raise KeyError(f"no service {name!r}; services: {', '.join(sorted(self._services))}") from None

    def add_service(self, name: str, service: Any) -> None:
        """Register a service (plugins use this from ``extend_application``)."""
        if name in self._services:
            raise ValueError(f"service {name!r} is already registered")
        self._services[name] = service

    def build_declared(self) -> list[Pipeline]:
        """Build the pipelines declared in pipelines.conf (once); ``run`` calls this itself."""
        if self._declared:
            return []
        self._declared = True
        return declare_pipelines(self)

    # -- running ------------------------------------------------------------------------------------------
    def run(self) -> int:
        """Run until stopped (signal, :meth:`stop`, or every pipeline finished); returns the exit code."""
        return asyncio.run(self.run_async())

    async def run_async(self) -> int:
        """Like :meth:`run`, inside an already running event loop."""
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        if self.stopping:  # stop() was called before the loop existed
            self._stop_event.set()
        self.build_declared()
        for problem in unused_sections(self):
            log.warning("%s: %s", self.config.path or "configuration", problem)
        handlers = self._install_signal_handlers()
        for where in self.secrets.too_short:
            log.warning("%s: a secret shorter than 4 characters cannot be masked in logs", where)
        masking = masked_logs(self.secrets)
        masking.__enter__()
        self.running = True
        try:
            if self.web is not None:
                await self.web.start()
            await self.pump_service.start()
            if not self.pump_service.pipelines:
                log.info("no pipelines registered; running until stopped")
            elif self.pump_service.all_finished():
                self._stop_event.set()
            await self._stop_event.wait()
        except Exception:
            self.exit_code = self.exit_code or 1
            raise
        finally:
            self.stopping = True
            try:
                await self.pump_service.stop()
                await asyncio.gather(*self._pending_starts, return_exceptions=True)
            finally:
                if self.web is not None:
                    await self.web.stop()
                self._remove_signal_handlers(handlers)
                self.running = False
                masking.__exit__(None, None, None)
        return self.exit_code

    def stop(self, exit_code: int = 0) -> None:
        """Ask for a graceful stop; safe to call from any thread or a signal handler."""
        self.exit_code = max(self.exit_code, exit_code)
        self.stopping = True
        loop, event = self._loop, self._stop_event
        if loop is None or event is None:
            return
        if loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            event.set()
        else:
            loop.call_soon_threadsafe(event.set)

    def pipeline_finished(self, pipeline: Pipeline) -> None:
        """Called by each pipeline when it stops; the application ends once all have."""
        if self.pump_service.all_finished():
            self.stop()

    def start_pipeline_soon(self, pipeline: Pipeline) -> None:
        """Start a pipeline added while the application runs."""
        self._pending_starts.append(asyncio.get_running_loop().create_task(pipeline.start()))

    def _install_signal_handlers(self) -> list[signal.Signals]:
        if threading.current_thread() is not threading.main_thread():
            return []
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):
                pass
        return installed

    def _remove_signal_handlers(self, installed: list[signal.Signals]) -> None:
        if self._loop is None or self._loop.is_closed():
            return
        for sig in installed:
            self._loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.stopping:
            log.warning("%s again: stopping now without waiting for in-flight events", sig.name)
            for task in asyncio.all_tasks(self._loop):
                if task is not asyncio.current_task():
                    task.cancel()
            return
        log.info("%s received: stopping gracefully (send it again to stop at once)", sig.name)
        self.stop()


def _load(config: str | os.PathLike[str] | PipelinesConfig | None, environ: Mapping[str, str]) -> PipelinesConfig:
    if isinstance(config, PipelinesConfig):
        return config
    if config is not None:
        return load_config(config, environ=environ)
    from_env = environ.get(ENV_CONFIG)
    if from_env:
        return load_config(from_env, environ=environ)
    default = Path("pipelines.conf")
    if default.is_file():
        log.info("using %s from the working directory", default.resolve())
        return load_config(default, environ=environ)
    return PipelinesConfig()
