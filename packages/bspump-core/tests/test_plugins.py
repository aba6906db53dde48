"""Plugins: entry points of installed distributions, fault isolation, allow/block, the type registry,
and the ``bspump plugins`` / ``check`` / ``--version`` commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import make_app, run_app, write_conf

import bspump
from bspump.plugins import Plugins
from bspump.registry import TypeRegistry

SRC = Path(__file__).resolve().parents[1] / "src"

GOOD_MODULE = '''
import bspump


class Upper(bspump.Processor):
    def process(self, context, event):
        return event.upper()


class Shout(bspump.Sink):
    def put(self, batch):
        batch.delivery.ack(len(batch))


@bspump.hookimpl
def register_processors(register):
    register(Upper)


@bspump.hookimpl
def register_sinks(register):
    register(Shout, name="Loud")
'''

BROKEN_MODULE = '''
raise RuntimeError("this plugin needs libfoo 2.0")
'''

FAILS_TO_REGISTER_MODULE = '''
import bspump


@bspump.hookimpl
def register_sources(register):
    raise KeyError("missing table")
'''


def install(site: Path, dist: str, version: str, ep_name: str, module: str, code: str) -> None:
    """A distribution as pip leaves it in site-packages: its module plus a *.dist-info directory."""
    (site / f"{module}.py").write_text(code)
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[bspump]\n{ep_name} = {module}\n")
    (info / "RECORD").write_text("")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    site = tmp_path / "site-packages"
    site.mkdir()
    install(site, "bspump-goodplug", "1.2.3", "goodplug", "bspump_goodplug_plugin", GOOD_MODULE)
    install(site, "bspump-brokenplug", "0.1.0", "brokenplug", "bspump_brokenplug_plugin", BROKEN_MODULE)
    install(site, "bspump-badreg", "0.2.0", "badreg", "bspump_badreg_plugin", FAILS_TO_REGISTER_MODULE)
    return site


def cli(site: Path, *args: str, env: dict[str, str] | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BSPUMP_")}
    environ["PYTHONPATH"] = os.pathsep.join([str(site), str(SRC)])
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "bspump.cli", *args], capture_output=True, text=True,
                          env=environ, timeout=60, cwd=cwd)


def test_bspump_plugins_reports_the_broken_one_and_lists_the_others(site: Path) -> None:
    result = cli(site, "plugins")
    assert result.returncode == 1, result.stderr
    assert result.stderr.endswith("error: 2 plugin(s) failed to load: badreg, brokenplug\n")
    out = result.stdout
    assert "goodplug 1.2.3 (bspump-goodplug): loaded" in out
    assert "processor:goodplug.Upper" in out
    assert "sink:goodplug.Loud" in out
    assert "brokenplug 0.1.0 (bspump-brokenplug): failed" in out
    assert "error: import failed: RuntimeError: this plugin needs libfoo 2.0" in out
    assert "badreg 0.2.0 (bspump-badreg): failed" in out
    assert "error: registration failed: KeyError" in out
    assert "source:core.FileSource" in out  # core always there


def test_bspump_plugins_json(site: Path) -> None:
    result = cli(site, "plugins", "--json")
    assert result.returncode == 1, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["goodplug"]["status"] == "loaded"
    assert rows["goodplug"]["version"] == "1.2.3"
    assert rows["goodplug"]["types"] == ["processor:goodplug.Upper", "sink:goodplug.Loud"]
    assert rows["brokenplug"]["status"] == "failed"
    assert "libfoo 2.0" in rows["brokenplug"]["error"]
    assert rows["core"]["status"] == "loaded"


@pytest.mark.parametrize(("env", "blocked"), [
    ({"BSPUMP_PLUGINS": "goodplug"}, {"brokenplug", "badreg"}),
    ({"BSPUMP_BLOCK_PLUGINS": "brokenplug, badreg"}, {"brokenplug", "badreg"}),
    ({"BSPUMP_PLUGINS": "none"}, {"brokenplug", "badreg", "goodplug"}),
])
def test_bspump_plugins_allow_and_block(site: Path, env: dict[str, str], blocked: set[str]) -> None:
    result = cli(site, "plugins", "--json", env=env)
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    ours = {"goodplug", "brokenplug", "badreg"}
    assert {name for name in ours if rows[name]["status"] == "blocked"} == blocked
    assert all(rows[name]["status"] == "loaded" for name in ours - blocked)
    assert rows["core"]["status"] == "loaded"  # core's own types cannot be blocked away


def test_bspump_version_and_check(site: Path, tmp_path: Path) -> None:
    result = cli(site, "--version")
    assert result.returncode == 0 and result.stdout.strip() == f"bspump {bspump.__version__}"
    (tmp_path / "in.txt").write_text("a\nb\n")
    good = write_conf(tmp_path, textwrap.dedent("""\
        [pipeline:P:In]
        type = core.FileSource
        path = in.txt
        format = text

        [pipeline:P:Up]
        type = goodplug.Upper

        [pipeline:P:Out]
        type = core.NullSink
        """))
    result = cli(site, "check", str(good))
    assert result.returncode == 0, result.stderr
    assert "pipeline P: In (FileSource) -> Up (Upper) -> Out (NullSink)" in result.stdout
    assert "plugin brokenplug failed to load" in result.stdout
    bad = write_conf(tmp_path, "[pipeline:P:In]\ntype = core.FileSource\npath = in.txt\nformt = text\n"
                               "[pipeline:P:Out]\ntype = core.NullSink\n", name="bad.conf")
    result = cli(site, "check", str(bad))
    assert result.returncode == 2
    assert f"{bad}:4 [pipeline:P:In] formt: unknown key; did you mean 'format'" in result.stderr


MISSING_CLIENT_MODULE = '''
import acme_client_library

import bspump


@bspump.hookimpl
def register_connections(register):
    register(acme_client_library.Connection)
'''

MISSPELLED_HOOK_MODULE = '''
import bspump


@bspump.hookimpl
def register_sink(register):
    register(bspump.NullSink, name="Sink")
'''


def test_bspump_plugins_fails_for_a_misspelled_hook(tmp_path: Path) -> None:
    install(tmp_path, "bspump-typo", "0.1.0", "typo", "bspump_typo_plugin", MISSPELLED_HOOK_MODULE)
    result = cli(tmp_path, "plugins")
    assert result.returncode == 1
    assert "typo 0.1.0 (bspump-typo): failed\n" in result.stdout
    assert "error: registration failed: unknown hook 'register_sink' (did you mean 'register_sinks'?)" in result.stdout
    assert "source:core.FileSource" in result.stdout  # everything else is still listed
    assert result.stderr.endswith("error: 1 plugin(s) failed to load: typo\n")


def test_bspump_check_names_the_load_error_of_an_installed_plugin(tmp_path: Path) -> None:
    install(tmp_path, "bspump-acme", "1.0.0", "acme", "bspump_acme_plugin", MISSING_CLIENT_MODULE)
    conf = write_conf(tmp_path, "[connection:Acme]\ntype = acme.Connection\n"
                                "[pipeline:P:In]\ntype = core.MemorySource\n[pipeline:P:Out]\ntype = core.NullSink\n")
    result = cli(tmp_path, "check", str(conf))
    assert result.returncode == 2
    assert (f"{conf}:2 [connection:Acme] type: unknown connection type 'acme.Connection': plugin 'acme' is installed "
            "but failed to load: import failed: ModuleNotFoundError: No module named 'acme_client_library'"
            ) in result.stderr
    assert "pip install" not in result.stderr


def test_registry_says_why_an_installed_plugins_types_are_missing(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    install(tmp_path, "bspump-acme", "1.0.0", "acme", "bspump_acme_plugin", MISSING_CLIENT_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    reasons = {
        "failed to load: import failed: ModuleNotFoundError: No module named 'acme_client_library'": {},
        "blocked by BSPUMP_BLOCK_PLUGINS": {"BSPUMP_BLOCK_PLUGINS": "acme"},
        "not listed in BSPUMP_PLUGINS": {"BSPUMP_PLUGINS": "none"},
    }
    for reason, environ in reasons.items():
        registry = Plugins(environ=environ).registry
        with pytest.raises(bspump.PluginError) as raised:
            registry.resolve("connection", "acme.Connection")
        assert str(raised.value) == (
            f"unknown connection type 'acme.Connection': plugin 'acme' is installed but {reason}"
        )
        # For callers that resolve across several kinds and word their own error (declare.py).
        assert registry.missing_plugin("acme.AnyName") == f"plugin 'acme' is installed but {reason}"
        assert registry.missing_plugin("core.Nothing") is None


# -- in process -------------------------------------------------------------------------------------------
def test_plugins_in_process_fault_isolation_and_allow_block(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(site))
    plugins = Plugins(environ={})
    by_name = {info.name: info for info in plugins.infos}
    assert by_name["goodplug"].status == "loaded"
    assert by_name["brokenplug"].status == "failed" and "libfoo" in by_name["brokenplug"].error
    assert by_name["badreg"].status == "failed" and by_name["badreg"].error.startswith("registration failed")
    assert {info.name for info in plugins.failed()} == {"brokenplug", "badreg"}
    assert plugins.registry.resolve("processor", "goodplug.Upper").__name__ == "Upper"
    assert plugins.registry.resolve("processor", "Upper").__name__ == "Upper"  # unique bare name
    assert plugins.registry.resolve("sink", "goodplug.Loud").__name__ == "Shout"
    assert {"core.FileSource", "core.MemorySource", "core.StdinSource"} <= set(plugins.registry.names("source"))

    allowed = Plugins(environ={"BSPUMP_PLUGINS": "goodplug"})
    assert {i.name: i.status for i in allowed.infos}["brokenplug"] == "blocked"
    blocked = Plugins(environ={"BSPUMP_BLOCK_PLUGINS": "goodplug"})
    assert {i.name: i.status for i in blocked.infos}["goodplug"] == "blocked"
    with pytest.raises(bspump.PluginError, match=r"unknown processor type 'goodplug\.Upper'"):
        blocked.registry.resolve("processor", "goodplug.Upper")
    nothing = Plugins(load_entry_points=False)
    assert [i.name for i in nothing.infos] == ["core"]


async def test_plugin_types_are_usable_from_pipelines_conf(site: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(site))
    (tmp_path / "in.txt").write_text("hello\nworld\n")
    path = write_conf(tmp_path, textwrap.dedent(f"""\
        [pipeline:P:In]
        type = core.FileSource
        path = {tmp_path}/in.txt
        format = text
        [pipeline:P:Up]
        type = goodplug.Upper
        [pipeline:P:Out]
        type = core.MemorySink
        """))
    app = make_app(path, load_plugins=True)
    assert await run_app(app) == 0
    assert app.pump_service.pipelines["P"].sink.events == ["HELLO", "WORLD"]


def test_type_registry_errors() -> None:
    registry = TypeRegistry()

    class Thing(bspump.Processor):
        pass

    class Other(bspump.Processor):
        pass

    assert registry.register("processor", "a", Thing) == "a.Thing"
    assert registry.register("processor", "a", Thing) == "a.Thing"  # idempotent for the same class
    with pytest.raises(bspump.PluginError, match="already registered"):
        registry.register("processor", "a", Other, "Thing")
    registry.register("processor", "b", Other, "Thing")
    with pytest.raises(bspump.PluginError, match=r"ambiguous: a\.Thing, b\.Thing"):
        registry.resolve("processor", "Thing")
    with pytest.raises(bspump.PluginError, match=r"unknown processor type 'a.Thnig'; did you mean 'a.Thing'"):
        registry.resolve("processor", "a.Thnig")
    with pytest.raises(bspump.PluginError, match="pip install bspump-kafka"):
        registry.resolve("processor", "kafka.Something")
    with pytest.raises(bspump.PluginError, match="unknown kind 'widget'"):
        registry.register("widget", "a", Thing)
    assert registry.resolve("processor", "bspump:JsonParser") is bspump.JsonParser
    with pytest.raises(bspump.PluginError, match="cannot import"):
        registry.resolve("processor", "no_such_mod_xyz:X")
    with pytest.raises(bspump.PluginError, match="has no 'Nope'"):
        registry.resolve("processor", "bspump:Nope")
    with pytest.raises(bspump.PluginError, match="is not a class"):
        registry.resolve("processor", "bspump:__version__")


def test_register_plugin_object_and_extend_application() -> None:
    app = make_app()

    class MyPlugin:
        @staticmethod
        @bspump.hookimpl
        def register_lookups(register):
            register(bspump.FileLookup, name="Table")

        @staticmethod
        @bspump.hookimpl
        def extend_application(app):
            app.add_service("my.Service", object())

    class Crashing:
        @staticmethod
        @bspump.hookimpl
        def extend_application(app):
            raise RuntimeError("boom")

    info = app.plugins.register("mine", MyPlugin)
    app.plugins.register("crashing", Crashing)
    assert info.types == ["lookup:mine.Table"]
    assert app.registry.resolve("lookup", "mine.Table") is bspump.FileLookup
    app.plugins.extend_application(app)  # the crashing plugin is logged and skipped
    assert app.get_service("my.Service") is not None
    with pytest.raises(KeyError, match=r"services: bspump\.PumpService, my\.Service"):
        app.get_service("nope")
