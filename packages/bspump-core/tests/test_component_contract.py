"""What a component declares (required keys, the connection it needs) is checked when it is built, and so by
``bspump check``, with file:line [section] key; required methods are abstract."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, ClassVar

import pytest
from conftest import make_app, write_conf

import bspump


class Warehouse(bspump.Connection):
    async def connect(self) -> None:
        pass


class OtherSystem(bspump.Connection):
    async def connect(self) -> None:
        pass


class WarehouseSink(bspump.AsyncSink):
    """Writes to ``table`` of a Warehouse."""

    ConnectionType = Warehouse
    ConfigDefaults: ClassVar[dict[str, Any]] = {"table": ""}
    ConfigRequired = ("table",)

    async def write(self, batch: bspump.Batch) -> None:
        pass


def component_module(tmp_path: Path) -> None:
    (tmp_path / "warehouse_plugin.py").write_text(textwrap.dedent('''
        import bspump

        class Warehouse(bspump.Connection):
            async def connect(self):
                pass

        class WarehouseSink(bspump.AsyncSink):
            """Writes to ``table`` of a Warehouse."""
            ConnectionType = Warehouse
            ConfigDefaults = {"table": ""}
            ConfigRequired = ("table",)

            async def write(self, batch):
                pass
    '''))


def test_a_missing_required_key_names_the_section(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, "[connection:Warehouse]\n\n[pipeline:P:Out]\nconnection = Warehouse\n")
    app = make_app(conf)
    app.get_service("bspump.PumpService").add_connection(Warehouse(app, "Warehouse"))
    with pytest.raises(bspump.ConfigError) as caught:
        WarehouseSink(app, bspump.Pipeline(app, "P"), id="Out")
    assert str(caught.value) == f"{conf}:3 [pipeline:P:Out] table: missing required key"


def test_an_empty_required_key_counts_as_missing() -> None:
    app = make_app()
    app.get_service("bspump.PumpService").add_connection(Warehouse(app, "Warehouse"))
    with pytest.raises(bspump.ConfigError, match="table: missing required key"):
        WarehouseSink(app, bspump.Pipeline(app, "P"), config={"table": ""})


def test_a_component_needing_a_connection_names_the_key_and_the_known_ids() -> None:
    app = make_app()
    app.get_service("bspump.PumpService").add_connection(OtherSystem(app, "Elsewhere"))
    with pytest.raises(bspump.ConfigError) as caught:
        WarehouseSink(app, bspump.Pipeline(app, "P"), config={"table": "t"})
    message = str(caught.value)
    assert "[pipeline:P:WarehouseSink] connection:" in message
    assert "WarehouseSink needs a Warehouse" in message and "known connection IDs: Elsewhere" in message


def test_a_connection_of_the_wrong_type_is_refused() -> None:
    app = make_app()
    app.get_service("bspump.PumpService").add_connection(OtherSystem(app, "Elsewhere"))
    with pytest.raises(bspump.ConfigError, match="needs a Warehouse; <OtherSystem 'Elsewhere' created> is not one"):
        WarehouseSink(app, bspump.Pipeline(app, "P"), connection="Elsewhere", config={"table": "t"})


def test_the_connection_named_after_the_type_is_the_default() -> None:
    app = make_app()
    warehouse = app.get_service("bspump.PumpService").add_connection(Warehouse(app, "Warehouse"))
    sink = WarehouseSink(app, bspump.Pipeline(app, "P"), config={"table": "t"})
    assert sink.connection is warehouse and sink.connections == [warehouse]


def test_the_only_connection_of_the_type_is_the_default_whatever_its_id() -> None:
    app = make_app()
    service = app.get_service("bspump.PumpService")
    service.add_connection(OtherSystem(app, "Elsewhere"))
    warehouse = service.add_connection(Warehouse(app, "MainWarehouse"))
    assert WarehouseSink(app, bspump.Pipeline(app, "P"), config={"table": "t"}).connection is warehouse
    service.add_connection(Warehouse(app, "Archive"))
    with pytest.raises(bspump.ConfigError, match=r"\(Archive, MainWarehouse are Warehouses: name one\)"):
        WarehouseSink(app, bspump.Pipeline(app, "Q"), config={"table": "t"})


def test_check_reports_a_sink_without_its_connection(tmp_path: Path) -> None:
    """Today's defect: such a sink passed `check`, then failed every event with AttributeError at run time."""
    component_module(tmp_path)
    conf = write_conf(tmp_path, textwrap.dedent("""\
        [pipeline:P:In]
        type = core.MemorySource

        [pipeline:P:Out]
        type = warehouse_plugin:WarehouseSink
        table = events
    """))
    result = subprocess.run([sys.executable, "-m", "bspump.cli", "check", str(conf)], capture_output=True,
                            text=True, cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "BSPUMP_PLUGINS": "none"})
    assert result.returncode == 2
    assert f"{conf}:4 [pipeline:P:Out] connection: WarehouseSink needs a Warehouse" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("base", "method"), [
    (bspump.Source, "main"), (bspump.Sink, "put"), (bspump.AsyncSink, "write"), (bspump.StreamingSink, "send"),
    (bspump.TriggerSource, "cycle"), (bspump.Lookup, "load"), (bspump.Connection, "connect"),
])
def test_required_methods_are_abstract(base: type, method: str) -> None:
    assert method in base.__abstractmethods__  # type: ignore[attr-defined]
    subclass = type("Incomplete", (base,), {})
    app = make_app()
    with pytest.raises(TypeError, match=method):
        if issubclass(base, bspump.Connection | bspump.Lookup):
            subclass(app, "X")
        else:
            subclass(app, bspump.Pipeline(app, "P"))


def test_configuration_errors_are_bspump_errors() -> None:
    """One ``except bspump.BSPumpError`` catches every error bspump raises about its input."""
    assert issubclass(bspump.ConfigError, bspump.BSPumpError)
    assert issubclass(bspump.PreflightError, bspump.ConfigError)
