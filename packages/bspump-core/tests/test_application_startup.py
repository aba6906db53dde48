"""Start-up of the application: preflight checks before anything starts, start-up failures located at their
section, a stop requested while starting, the forced stop, and warnings of the configuration."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
from conftest import CountingSource, make_app, run_app, wait_for, write_conf

import bspump
from bspump.application import PreflightError
from bspump.config import ConfigError
from bspump.pipeline import PipelineState
from bspump.service import StartupError


class NeedsFile:
    """Mixed into a connection, lookup or component: ``path`` must name an existing file (its preflight)."""

    Config: Any
    checked: ClassVar[list[str]] = []

    def preflight(self) -> None:
        NeedsFile.checked.append(type(self).__name__)
        path = self.Config.getpath("path")
        if not os.path.isfile(path):
            raise self.Config.error("path", f"no such file: {path}")


class FileConnection(NeedsFile, bspump.Connection):
    ConfigDefaults: ClassVar[dict[str, Any]] = {"path": ""}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connects = 0

    async def connect(self) -> None:
        self.connects += 1


class FileTable(NeedsFile, bspump.Lookup):
    ConfigDefaults: ClassVar[dict[str, Any]] = {"path": ""}

    async def load(self) -> Mapping[Any, Any]:
        return {}


class FileInput(NeedsFile, bspump.MemorySource):
    ConfigDefaults: ClassVar[dict[str, Any]] = {"path": ""}


class FileOutput(NeedsFile, bspump.NullSink):
    ConfigDefaults: ClassVar[dict[str, Any]] = {"path": ""}


class NeverAcknowledged(bspump.AsyncSink):
    """A sink whose external system accepts batches but never confirms them."""

    async def write(self, batch: bspump.Batch) -> None:
        await asyncio.Event().wait()


class RecordingConnection(bspump.Connection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[str] = []

    async def connect(self) -> None:
        self.calls.append("connect")

    async def disconnect(self) -> None:
        self.calls.append("disconnect")


@pytest.fixture(autouse=True)
def _forget_checked() -> Iterator[None]:
    NeedsFile.checked.clear()
    yield
    NeedsFile.checked.clear()


def assemble_file_checked(app: bspump.BSPumpApplication) -> tuple[FileConnection, bspump.Pipeline]:
    svc = app.get_service("bspump.PumpService")
    connection = svc.add_connection(FileConnection(app, "Files"))
    svc.add_lookup(FileTable(app, "Table"))
    pipeline = bspump.Pipeline(app, "P")
    pipeline.build(FileInput(app, pipeline, id="In", events=[1]), FileOutput(app, pipeline, id="Out"))
    svc.add_pipeline(pipeline)
    return connection, pipeline


async def test_preflight_checks_every_part_reports_every_failure_and_starts_nothing(tmp_path: Path) -> None:
    (tmp_path / "present.txt").write_text("x")
    conf = write_conf(tmp_path, "[connection:Files]\npath = missing-a.txt\n\n[lookup:Table]\npath = present.txt\n\n"
                                "[pipeline:P:In]\npath = missing-b.txt\n\n[pipeline:P:Out]\npath = present.txt\n")
    app = make_app(conf)
    connection, pipeline = assemble_file_checked(app)
    with pytest.raises(PreflightError) as raised:
        await run_app(app)
    assert [str(error) for error in raised.value.errors] == [
        f"{conf}:2 [connection:Files] path: no such file: {tmp_path / 'missing-a.txt'}",
        f"{conf}:8 [pipeline:P:In] path: no such file: {tmp_path / 'missing-b.txt'}",
    ]
    assert str(raised.value).splitlines() == [str(error) for error in raised.value.errors]
    assert isinstance(raised.value, ConfigError)
    assert sorted(NeedsFile.checked) == ["FileConnection", "FileInput", "FileOutput", "FileTable"]
    # Nothing started: no connect attempt, the pipeline was never started, no signal handler is left.
    assert connection.connects == 0 and connection.state is bspump.ConnectionState.CREATED
    assert pipeline.state is PipelineState.BUILT and not app.running


async def test_preflight_that_fails_without_a_config_error_is_located_at_its_section(tmp_path: Path) -> None:
    class Buggy(bspump.Lookup):
        def preflight(self) -> None:
            raise PermissionError(13, "Permission denied")

        async def load(self) -> Mapping[Any, Any]:
            return {}

    conf = write_conf(tmp_path, "[lookup:Geo]\nrefresh = 0\n")
    app = make_app(conf)
    app.get_service("bspump.PumpService").add_lookup(Buggy(app, "Geo"))
    with pytest.raises(PreflightError) as raised:
        app.preflight()
    assert str(raised.value) == f"{conf}:1 [lookup:Geo]: preflight check failed: PermissionError: [Errno 13] " \
                                "Permission denied"


def listening_socket() -> socket.socket:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    return listener


async def test_web_listen_on_a_port_in_use_fails_the_preflight_naming_web_listen(tmp_path: Path) -> None:
    with listening_socket() as taken:
        port = taken.getsockname()[1]
        conf = write_conf(tmp_path, f"[general]\nstate_dir = state\n[web]\nlisten = 127.0.0.1:{port}\n")
        app = make_app(conf)
        with pytest.raises(PreflightError) as raised:
            await run_app(app)
    assert str(raised.value) == f"{conf}:4 [web] listen: cannot listen on 127.0.0.1:{port}: address already in use"


async def test_web_listen_port_out_of_range_is_a_config_error_naming_web_listen(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, "[web]\nlisten = 127.0.0.1:99999\n")
    # Rejected when the application is built or at its preflight, but never by a traceback from bind().
    with pytest.raises(ConfigError) as raised:
        await run_app(make_app(conf))
    assert str(raised.value).startswith(f"{conf}:2 [web] listen: ")
    assert "99999" in str(raised.value)


async def test_web_port_taken_after_the_preflight_is_a_config_error_naming_web_listen(tmp_path: Path) -> None:
    with listening_socket() as probe:
        port = probe.getsockname()[1]
    conf = write_conf(tmp_path, f"[web]\nlisten = 127.0.0.1:{port}\n")
    app = make_app(conf)
    thief: list[socket.socket] = []

    class TakesThePort(RecordingConnection):
        def preflight(self) -> None:  # runs after the web check: another process binding the port meanwhile
            thief.append(listening_socket_on(port))

    app.get_service("bspump.PumpService").add_connection(TakesThePort(app, "C"))
    try:
        with pytest.raises(ConfigError) as raised:
            await run_app(app)
    finally:
        for sock in thief:
            sock.close()
    assert str(raised.value) == f"{conf}:2 [web] listen: cannot listen on 127.0.0.1:{port}: address already in use"


def listening_socket_on(port: int) -> socket.socket:
    listener = socket.socket()
    listener.bind(("127.0.0.1", port))
    listener.listen()
    return listener


async def test_a_lookup_that_fails_to_load_names_its_section(tmp_path: Path) -> None:
    class Broken(bspump.Lookup):
        async def load(self) -> Mapping[Any, Any]:
            raise OSError("table missing at http://user:hunter2@tables.example/geo")

    conf = write_conf(tmp_path, "[connection:Unused]\n\n[lookup:Geo]\nrefresh = 0\n")
    app = make_app(conf)
    app.get_service("bspump.PumpService").add_lookup(Broken(app, "Geo"))
    with pytest.raises(StartupError) as raised:
        await run_app(app)
    assert str(raised.value) == (f"{conf}:3 [lookup:Geo]: lookup 'Geo' failed to load: OSError: table missing at "
                                 "http://user:***@tables.example/geo")
    assert isinstance(raised.value, RuntimeError)  # what it was before it named the section


async def test_a_pipeline_that_fails_to_start_names_its_section(tmp_path: Path) -> None:
    class Unopenable(bspump.NullSink):
        async def start(self) -> None:
            raise PermissionError(13, "Permission denied", "/var/out.jsonl")

    conf = write_conf(tmp_path, "[pipeline:Job]\nerror_policy = skip\n")
    app = make_app(conf)
    pipeline = bspump.Pipeline(app, "Job")
    pipeline.build(bspump.MemorySource(app, pipeline, events=[1]), Unopenable(app, pipeline))
    app.get_service("bspump.PumpService").add_pipeline(pipeline)
    with pytest.raises(StartupError) as raised:
        await run_app(app)
    assert str(raised.value) == (f"{conf}:1 [pipeline:Job]: pipeline 'Job' failed to start: PermissionError: "
                                 "[Errno 13] Permission denied: '/var/out.jsonl'")


async def test_a_stop_requested_while_starting_cancels_the_start() -> None:
    loading = asyncio.Event()

    class Endless(bspump.Lookup):
        async def load(self) -> Mapping[Any, Any]:
            loading.set()
            await asyncio.Event().wait()  # a table server that never answers
            return {}

    app = make_app()
    svc = app.get_service("bspump.PumpService")
    connection = svc.add_connection(RecordingConnection(app, "C"))
    svc.add_lookup(Endless(app, "Slow"))
    runner = asyncio.create_task(run_app(app))
    await asyncio.wait_for(loading.wait(), 5)
    app.stop()
    assert await runner == 0
    assert connection.state is bspump.ConnectionState.CLOSED


async def test_a_forced_stop_abandons_the_drain_closes_connections_and_returns_its_exit_code() -> None:
    app = make_app()
    svc = app.get_service("bspump.PumpService")
    connection = svc.add_connection(RecordingConnection(app, "C"))
    pipeline = bspump.Pipeline(app, "P", config={"max_in_flight": 40, "drain_timeout": "1h"})
    pipeline.build(CountingSource(app, pipeline, connection="C"), NeverAcknowledged(app, pipeline))
    svc.add_pipeline(pipeline)
    runner = asyncio.create_task(run_app(app))
    await wait_for(lambda: pipeline.in_flight >= 40)
    app.stop()
    await wait_for(lambda: pipeline.state is PipelineState.STOPPING)
    assert not runner.done()  # the graceful stop waits for acknowledgements that never come
    app.stop(exit_code=130, force=True)
    assert await runner == 130
    assert app.forced_stop
    assert connection.calls == ["connect", "disconnect"] and connection.state is bspump.ConnectionState.CLOSED
    metrics = pipeline.metrics()
    assert metrics["out"] == 0 and metrics["in_flight"] == 40  # nothing reported written that was not


async def test_configuration_warnings_and_an_empty_application_are_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    conf = write_conf(tmp_path, "[connection:Nobody]\nhost = x\n")
    app = make_app(conf)
    # What a PipelinesConfig with `warnings` carries (e.g. a tab-indented key); absent, nothing is printed.
    app.config.warnings = [f"{conf}:2 [connection:Nobody] host: indented with a tab"]  # type: ignore[attr-defined]
    assert app.warnings() == [f"{conf}:2 [connection:Nobody] host: indented with a tab",
                              f"{conf}:1 [connection:Nobody] configures no connection (known: none)"]
    runner = asyncio.create_task(run_app(app))
    await wait_for(lambda: app.running)
    app.stop()
    assert await runner == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [*app.warnings(), "no pipeline was built or added; running until stopped"]


def module_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, code: str) -> None:
    (tmp_path / f"{name}.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)


def test_a_module_that_raises_on_import_is_an_error_at_its_type_key(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    module_file(tmp_path, monkeypatch, "startup_raising_module", "raise RuntimeError('needs libfoo 2.0')\n")
    conf = write_conf(tmp_path, "[pipeline:P:In]\ntype = startup_raising_module:Source\n"
                                "[pipeline:P:Out]\ntype = core.NullSink\n")
    with pytest.raises(ConfigError) as raised:
        make_app(conf).build_declared()
    assert str(raised.value) == (f"{conf}:2 [pipeline:P:In] type: importing 'startup_raising_module' for type "
                                 "'startup_raising_module:Source' failed: RuntimeError: needs libfoo 2.0")


def test_a_declared_part_whose_constructor_raises_is_an_error_at_its_type_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module_file(tmp_path, monkeypatch, "startup_ctor_module", (
        "import bspump\n"
        "class Conn(bspump.Connection):\n"
        "    def __init__(self, *args, **kwargs):\n"
        "        super().__init__(*args, **kwargs)\n"
        "        raise ValueError('no certificate store')\n"
        "    async def connect(self):\n"
        "        pass\n"))
    conf = write_conf(tmp_path, "[connection:C]\n\ntype = startup_ctor_module:Conn\n")
    with pytest.raises(ConfigError) as raised:
        make_app(conf)
    assert str(raised.value) == f"{conf}:3 [connection:C] type: building it failed: ValueError: no certificate store"


def test_an_unknown_connection_id_in_a_declared_component_is_an_error_at_its_connection_key(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, "[pipeline:P:In]\ntype = core.MemorySource\nconnection = Kafak\n"
                                "[pipeline:P:Out]\ntype = core.NullSink\n")
    with pytest.raises(ConfigError) as raised:
        make_app(conf).build_declared()
    assert str(raised.value) == (f"{conf}:3 [pipeline:P:In] connection: unknown connection ID 'Kafak' "
                                 "(referenced by P.In); known connection IDs: none")
