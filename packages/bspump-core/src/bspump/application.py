"""BSPumpApplication: owns the event loop, signals, services and the order of start and stop."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .checkpoint import CheckpointStore, FileCheckpointStore
from .config import ComponentConfig, ConfigError, PipelinesConfig, load_config
from .config.secrets import SecretMask
from .declare import declare_connections_and_lookups, declare_pipelines, unused_sections
from .errors import describe_error
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
#: Seconds each connection gets to close when a forced stop (a second signal) skips the draining.
FORCED_STOP_CLOSE_TIMEOUT = 2.0


class PreflightError(ConfigError):
    """Every failure of the preflight checks, one :class:`~bspump.config.ConfigError` per line of ``str()``.

    ``errors`` holds them; each names ``file:line [section] key``.
    """

    errors: list[ConfigError]

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(error) for error in self.errors))


class BSPumpApplication:
    """The application: create it, register connections and pipelines, then call :meth:`run`.

    ``config`` is the path of a pipelines.conf (or a loaded :class:`~bspump.config.PipelinesConfig`);
    without it, ``$BSPUMP_CONFIG`` or a ``pipelines.conf`` in the working directory is used if present.
    ``load_plugins=False`` skips installed plugins (core types stay available). The application ends when
    every pipeline finished, unless ``stop_when_finished=False`` (it then runs until stopped, and pipelines
    added meanwhile start at once). SIGINT and SIGTERM stop gracefully (unless ``handle_signals=False``):
    sources stop, in-flight events drain, sinks flush, positions commit, connections close.
    A second signal during that stop forces it: the draining is abandoned, connections get
    ``FORCED_STOP_CLOSE_TIMEOUT`` seconds to close, and the exit code is 128 + the signal's number (130 for
    SIGINT, 143 for SIGTERM); :attr:`forced_stop` is then true.
    """

    #: Keys of ``[general]``: ``state_dir`` is the folder of the default checkpoint store.
    GeneralDefaults: dict[str, Any] = {"state_dir": ""}

    def __init__(
        self,
        config: str | os.PathLike[str] | PipelinesConfig | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        load_plugins: bool = True,
        stop_when_finished: bool = True,
        handle_signals: bool = True,
    ) -> None:
        #: The application ends once every pipeline finished; a notebook keeps it running for the next ones.
        self.stop_when_finished = stop_when_finished
        #: SIGINT/SIGTERM stop the application; a notebook leaves them to its kernel (interrupt stays its own).
        self.handle_signals = handle_signals
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
        #: True once a second signal (or ``stop(force=True)``) abandoned the graceful stop.
        self.forced_stop = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._force_event: asyncio.Event | None = None
        self._signals_received = 0
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
        """Like :meth:`run`, inside an already running event loop.

        Before anything starts, every preflight check runs (:meth:`preflight`); a failure raises
        :class:`PreflightError` and nothing is started. A start-up failure raises: a lookup that does not
        load or a pipeline that does not start (:class:`~bspump.service.StartupError`), ``[web] listen``
        that cannot be bound (:class:`~bspump.config.ConfigError`). Configured secret values are masked in
        every log record while it runs.
        """
        with masked_logs(self.secrets):
            return await self._run()

    async def _run(self) -> int:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self._force_event = asyncio.Event()
        if self.stopping:  # stop() was called before the loop existed
            self._stop_event.set()
        if self.forced_stop:
            self._force_event.set()
        self.build_declared()
        self.preflight()
        warnings = self.warnings()  # may raise (a typo in a key of an unused [pipeline:ID]): before the handlers
        handlers = self._install_signal_handlers()
        for warning in warnings:
            log.warning("%s", warning)
        for where in self.secrets.too_short:
            log.warning("%s: a secret shorter than 4 characters cannot be masked in logs", where)
        if not self.pump_service.pipelines:
            log.warning("no pipeline was built or added; running until stopped")
        self.running = True
        try:
            await self._start_and_wait(self._stop_event)
        except Exception:
            self.exit_code = self.exit_code or 1
            raise
        finally:
            self.stopping = True
            try:
                await self._shut_down(self._force_event)
            finally:
                if self.web is not None:
                    await self.web.stop()
                self._remove_signal_handlers(handlers)
                self.running = False
        return self.exit_code

    def preflight(self) -> None:
        """Check what can be known without connecting; raise :class:`PreflightError` listing every failure.

        Checks ``[web] listen`` (a valid port that is free), then calls ``preflight()`` of every connection,
        lookup and pipeline component. Called by :meth:`run_async` before it starts anything, and by
        ``bspump check``.
        """
        failures: list[ConfigError] = []
        for section_name, check in self._preflight_checks():
            try:
                check()
            except ConfigError as exc:
                failures.append(exc)
            except Exception as exc:  # a preflight with a bug, or an OSError it did not word itself
                section = self.config.section(section_name)
                failures.append(ConfigError(
                    f"preflight check failed: {describe_error(exc)}", section=section_name,
                    file=section.file if section is not None else None,
                    line=section.line if section is not None else None))
        if failures:
            raise PreflightError(failures)

    def _preflight_checks(self) -> Iterator[tuple[str, Callable[[], None]]]:
        if self.web is not None:
            yield "web", self.web.preflight
        service = self.pump_service
        for connection in service.connections.values():
            yield f"connection:{connection.id}", connection.preflight
        for lookup in service.lookups.values():
            yield f"lookup:{lookup.id}", lookup.preflight
        for pipeline in service.pipelines.values():
            for component in pipeline.components:
                yield f"pipeline:{pipeline.id}:{component.id}", component.preflight

    def warnings(self) -> list[str]:
        """What the configuration got away with: warnings of the loaded file and sections nothing uses."""
        found = [str(warning) for warning in getattr(self.config, "warnings", [])]
        found.extend(unused_sections(self))
        return found

    async def _start_and_wait(self, stop_requested: asyncio.Event) -> None:
        """Start everything, then wait for a stop request; a stop requested while starting cancels the start."""
        starting = asyncio.create_task(self._start(), name="bspump start")
        stopped = asyncio.create_task(stop_requested.wait(), name="bspump wait for stop")
        try:
            await asyncio.wait((starting, stopped), return_when=asyncio.FIRST_COMPLETED)
            if starting.done():
                starting.result()  # raises the start-up failure, if any
                if self.stop_when_finished and self.pump_service.all_finished():
                    stop_requested.set()
                await stopped
        finally:
            for task in (starting, stopped):
                task.cancel()
            await asyncio.gather(starting, stopped, return_exceptions=True)

    async def _start(self) -> None:
        if self.web is not None:
            await self.web.start()  # a port taken since the preflight is a ConfigError naming [web] listen
        await self.pump_service.start()

    async def _shut_down(self, force_requested: asyncio.Event) -> None:
        """The graceful stop, abandoned for :meth:`PumpService.stop_now` if a forced stop is requested."""
        graceful = asyncio.create_task(self._stop_gracefully(), name="bspump graceful stop")
        forced = asyncio.create_task(force_requested.wait(), name="bspump wait for forced stop")
        try:
            await asyncio.wait((graceful, forced), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            graceful.cancel()
            raise
        finally:
            forced.cancel()
        if graceful.done():
            graceful.result()
            return
        log.warning("forced stop: abandoning the graceful stop; events in flight stay unacknowledged")
        graceful.cancel()
        # A stop step that swallows the cancellation must not hold the forced stop up.
        await asyncio.wait((graceful,), timeout=FORCED_STOP_CLOSE_TIMEOUT)
        await self.pump_service.stop_now(FORCED_STOP_CLOSE_TIMEOUT)

    async def _stop_gracefully(self) -> None:
        await self.pump_service.stop()
        await asyncio.gather(*self._pending_starts, return_exceptions=True)

    def stop(self, exit_code: int = 0, *, force: bool = False) -> None:
        """Ask for a graceful stop; safe to call from any thread or a signal handler.

        ``force=True`` abandons a graceful stop under way (see the class docstring); ``exit_code`` is
        kept if it is higher than the one already set.
        """
        self.exit_code = max(self.exit_code, exit_code)
        self.stopping = True
        if force:
            self.forced_stop = True
        self._set_soon(self._stop_event)
        if force:
            self._set_soon(self._force_event)

    def _set_soon(self, event: asyncio.Event | None) -> None:
        loop = self._loop
        if loop is None or event is None or loop.is_closed():
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
        """Called by each pipeline when it stops; the application ends once all have (``stop_when_finished``)."""
        if self.stop_when_finished and self.pump_service.all_finished():
            self.stop()

    def start_pipeline_soon(self, pipeline: Pipeline) -> None:
        """Start a pipeline added while the application runs."""
        self._pending_starts.append(asyncio.get_running_loop().create_task(pipeline.start()))

    def _install_signal_handlers(self) -> list[signal.Signals]:
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
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
        # Counted, not inferred from `stopping`: a first signal while the application already stops on its
        # own (every pipeline finished, or one failed) must not skip the draining.
        self._signals_received += 1
        if self._signals_received == 1:
            log.info("%s received: stopping gracefully (send it again to stop at once)", sig.name)
            self.stop()
        elif not self.forced_stop:
            log.warning("%s again: stopping now without waiting for in-flight events (exit code %d)",
                        sig.name, 128 + sig.value)
            self.stop(exit_code=128 + sig.value, force=True)
        else:
            log.warning("%s again: the forced stop is already under way", sig.name)


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
