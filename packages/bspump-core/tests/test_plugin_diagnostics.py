"""Plugin diagnostics: hooks called through pluggy, misspelled and unmarked hooks, classes registered
through the wrong hook or twice, and the registry's answer for a type whose plugin failed.

Each test builds throwaway plugins as modules (``plugin_module``) or classes, and registers them with
``Plugins.register`` on a manager that loads no installed entry points.
"""

from __future__ import annotations

import inspect
import logging
import textwrap
import types
from typing import Any

import pytest
from conftest import make_app

import bspump
from bspump.plugins import PluginInfo, Plugins

COMPONENTS = '''
import bspump


class AcmeConnection(bspump.Connection):
    pass


class AcmeSource(bspump.Source):
    async def main(self):
        pass


class AcmeSink(bspump.Sink):
    def put(self, batch):
        batch.delivery.ack(len(batch))


class OtherSink(bspump.Sink):
    def put(self, batch):
        batch.delivery.ack(len(batch))
'''


def plugin_module(name: str, hooks: str) -> types.ModuleType:
    """A plugin module as an entry point would import it: the sample components plus ``hooks``."""
    module = types.ModuleType(name)
    exec(COMPONENTS + textwrap.dedent(hooks), module.__dict__)
    return module


def loaded(name: str, hooks: str) -> tuple[Plugins, PluginInfo]:
    plugins = Plugins(load_entry_points=False)
    return plugins, plugins.register(name, plugin_module(f"acme_{name}_plugin", hooks))


# -- hooks are called through pluggy ----------------------------------------------------------------------
def test_registration_hooks_are_called_through_pluggy() -> None:
    plugins = Plugins(load_entry_points=False)
    calls: list[tuple[str, list[str]]] = []
    plugins.manager.add_hookcall_monitoring(
        lambda hook_name, impls, kwargs: calls.append((hook_name, [impl.plugin_name for impl in impls])),
        lambda outcome, hook_name, impls, kwargs: None,
    )
    info = plugins.register("acme", plugin_module("acme_traced", '''
        @bspump.hookimpl
        def register_sinks(register):
            register(AcmeSink)
    '''))
    assert info.status == "loaded" and info.types == ["sink:acme.AcmeSink"]
    # Each hook is called for this plugin alone: core's implementations are not run a second time.
    assert ("register_sinks", ["acme"]) in calls
    assert all(impl_names in ([], ["acme"]) for _, impl_names in calls)


def test_a_plugins_tryfirst_and_hook_wrapper_apply_to_its_registrations() -> None:
    order: list[str] = []

    class Ordered:
        @staticmethod
        @bspump.hookimpl(specname="register_sinks")
        def plain(register: Any) -> None:
            order.append("plain")
            register(bspump.NullSink, name="Plain")

        @staticmethod
        @bspump.hookimpl(specname="register_sinks", tryfirst=True)
        def first(register: Any) -> None:
            order.append("tryfirst")
            register(bspump.MemorySink, name="First")

        @staticmethod
        @bspump.hookimpl(specname="register_sinks", wrapper=True)
        def around(register: Any) -> Any:
            order.append("wrapper before")
            result = yield
            order.append("wrapper after")
            register(bspump.StdoutSink, name="Wrapped")
            return result

    info = Plugins(load_entry_points=False).register("ordered", Ordered)
    assert info.status == "loaded", info.error
    assert order == ["wrapper before", "tryfirst", "plain", "wrapper after"]
    assert info.types == ["sink:ordered.First", "sink:ordered.Plain", "sink:ordered.Wrapped"]


def test_extend_application_follows_pluggy_order_and_skips_a_failing_plugin(
        caplog: pytest.LogCaptureFixture) -> None:
    app = make_app()
    calls: list[str] = []

    def extension(name: str, fail: bool = False, **marks: bool) -> type:
        @bspump.hookimpl(**marks)
        def extend_application(app: bspump.BSPumpApplication) -> None:
            calls.append(name)
            if fail:
                raise RuntimeError("no route table\nsecond line")

        return type(name, (), {"extend_application": staticmethod(extend_application)})

    # Registered in this order; pluggy calls tryfirst ones first, trylast ones last, the rest newest first.
    app.plugins.register("late", extension("late", trylast=True))
    app.plugins.register("plain", extension("plain"))
    app.plugins.register("early", extension("early", tryfirst=True))
    app.plugins.register("crashing", extension("crashing", fail=True))
    app.plugins.register("newest", extension("newest"))
    with caplog.at_level(logging.ERROR, logger="bspump.plugins"):
        app.plugins.extend_application(app)
    assert calls == ["early", "newest", "crashing", "plain", "late"]
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage() == (
        "plugin 'crashing': extend_application failed: RuntimeError: no route table; second line"
    )


# -- misspelled and unmarked hooks ---------------------------------------------------------------------------
@pytest.mark.parametrize(("hook", "suggestion"), [
    ("register_sink", "register_sinks"),
    ("register_source", "register_sources"),
    ("register_connection", "register_connections"),
    ("extend_app", "extend_application"),
])
def test_a_misspelled_hook_fails_the_plugin_with_a_suggestion(hook: str, suggestion: str) -> None:
    plugins, info = loaded("acme", f'''
        @bspump.hookimpl
        def register_connections(register):
            register(AcmeConnection)


        @bspump.hookimpl
        def {hook}(**kwargs):
            pass
    ''')
    assert info.status == "failed"
    assert info.error == f"registration failed: unknown hook {hook!r} (did you mean {suggestion!r}?)"
    assert info.types == []
    # The plugin's correct hook registered nothing either, and pluggy no longer holds the plugin.
    assert "acme.AcmeConnection" not in plugins.registry.names("connection")
    assert plugins.manager.get_plugin("acme") is None
    assert plugins.failed() == [info]


def test_an_unknown_hook_without_a_close_match_lists_the_hooks() -> None:
    _, info = loaded("acme", '''
        @bspump.hookimpl
        def on_startup():
            pass
    ''')
    assert info.error == (
        "registration failed: unknown hook 'on_startup' (hooks are extend_application, register_connections, "
        "register_lookups, register_processors, register_sinks, register_sources)"
    )


def test_an_optional_hook_of_a_newer_bspump_is_accepted() -> None:
    _, info = loaded("acme", '''
        @bspump.hookimpl
        def register_sinks(register):
            register(AcmeSink)


        @bspump.hookimpl(optionalhook=True)
        def register_codecs(register):
            pass
    ''')
    assert info.status == "loaded", info.error
    assert info.types == ["sink:acme.AcmeSink"]


def test_a_hook_function_without_hookimpl_fails_the_plugin() -> None:
    plugins, info = loaded("acme", '''
        @bspump.hookimpl
        def register_connections(register):
            register(AcmeConnection)


        def register_sinks(register):
            register(AcmeSink)
    ''')
    assert info.status == "failed"
    assert info.error == (
        "registration failed: register_sinks is not marked @bspump.hookimpl, so it would never be called"
    )
    assert "acme.AcmeConnection" not in plugins.registry.names("connection")


def test_a_plugin_without_any_hook_fails() -> None:
    _, info = loaded("acme", "")
    assert info.status == "failed"
    assert "has no @bspump.hookimpl function (does the entry point name the plugin module?)" in info.error


def test_a_hook_with_a_wrong_argument_name_fails_on_one_line() -> None:
    _, info = loaded("acme", '''
        @bspump.hookimpl
        def register_sinks(reg):
            reg(AcmeSink)
    ''')
    assert info.status == "failed"
    assert "\n" not in info.error
    assert info.error.startswith("registration failed: Plugin 'acme' for hook 'register_sinks'")
    assert "{'reg'}" in info.error


def test_a_failed_plugin_does_not_extend_the_application() -> None:
    app = make_app()
    app.plugins.register("acme", plugin_module("acme_extends", '''
        @bspump.hookimpl
        def register_sink(register):
            pass


        @bspump.hookimpl
        def extend_application(app):
            app.add_service("acme.Service", object())
    '''))
    app.plugins.extend_application(app)
    with pytest.raises(KeyError):
        app.get_service("acme.Service")


# -- what a plugin registers ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("hooks", "error"), [
    ("@bspump.hookimpl\ndef register_sinks(register):\n    register(AcmeSource)\n",
     "plugin 'acme': register_sinks: AcmeSource is a Source, not a Sink"),
    ("@bspump.hookimpl\ndef register_sources(register):\n    register(AcmeConnection)\n",
     "plugin 'acme': register_sources: AcmeConnection is a Connection, not a Source"),
    ("@bspump.hookimpl\ndef register_lookups(register):\n    register(dict)\n",
     "plugin 'acme': register_lookups: dict is not a Lookup"),
    ("@bspump.hookimpl\ndef register_connections(register):\n    register('AcmeConnection')\n",
     "plugin 'acme': register_connections: 'AcmeConnection' (str) is not a class"),
    ("@bspump.hookimpl\ndef register_sinks(register):\n    register(AcmeSink)\n    register(AcmeSink)\n",
     "plugin 'acme': register_sinks: AcmeSink is registered twice"),
    ("@bspump.hookimpl\ndef register_sinks(register):\n    register(AcmeSink)\n    register(AcmeSink, name='Sink')\n",
     "plugin 'acme': register_sinks: AcmeSink is registered twice (as acme.AcmeSink and acme.Sink)"),
    ("@bspump.hookimpl\ndef register_sinks(register):\n    register(AcmeSink, name='Sink')\n"
     "    register(OtherSink, name='Sink')\n",
     "plugin 'acme': register_sinks: AcmeSink and OtherSink are both registered as acme.Sink"),
    ("@bspump.hookimpl\ndef register_sinks(register):\n    register(AcmeSink, name='acme sink')\n",
     "plugin 'acme': register_sinks: 'acme sink' is not a valid type name for AcmeSink (letters, digits and _)"),
])
def test_a_wrong_registration_fails_the_plugin_naming_it_and_the_hook(hooks: str, error: str) -> None:
    plugins, info = loaded("acme", '''
        @bspump.hookimpl
        def register_connections(register):
            register(AcmeConnection, name="Connection")
    ''' + "\n\n" + hooks)
    assert info.status == "failed"
    assert info.error == f"registration failed: {error}"
    assert info.types == []
    assert "acme.Connection" not in plugins.registry.names("connection")  # nothing of a failed plugin stays


def test_an_instance_instead_of_a_class_is_refused() -> None:
    _, info = loaded("acme", '''
        SINK = AcmeSink.__new__(AcmeSink)


        @bspump.hookimpl
        def register_sinks(register):
            register(SINK)
    ''')
    assert info.status == "failed"
    assert info.error.startswith("registration failed: plugin 'acme': register_sinks: <")
    assert info.error.endswith("(AcmeSink) is not a class")


def test_a_refusal_swallowed_by_the_plugin_still_fails_it() -> None:
    _, info = loaded("acme", '''
        @bspump.hookimpl
        def register_sinks(register):
            try:
                register(AcmeSource)
            except Exception:
                pass
            register(AcmeSink)
    ''')
    assert info.status == "failed"
    assert info.error == "registration failed: plugin 'acme': register_sinks: AcmeSource is a Source, not a Sink"


def test_two_plugins_may_register_the_same_bare_name() -> None:
    plugins = Plugins(load_entry_points=False)
    hooks = '''
        @bspump.hookimpl
        def register_sinks(register):
            register(AcmeSink, name="Sink")
    '''
    first = plugins.register("acme", plugin_module("acme_one", hooks))
    second = plugins.register("other", plugin_module("acme_two", hooks))
    assert (first.status, second.status) == ("loaded", "loaded")
    assert plugins.registry.resolve("sink", "acme.Sink") is not plugins.registry.resolve("sink", "other.Sink")
    with pytest.raises(bspump.PluginError, match=r"ambiguous: acme\.Sink, other\.Sink"):
        plugins.registry.resolve("sink", "Sink")


def test_a_second_plugin_under_a_loaded_name_fails_and_keeps_the_first() -> None:
    plugins, first = loaded("acme", '''
        @bspump.hookimpl
        def register_sinks(register):
            register(AcmeSink)
    ''')
    second = plugins.register("acme", plugin_module("acme_again", '''
        @bspump.hookimpl
        def register_sinks(register):
            register(OtherSink)
    '''))
    assert first.status == "loaded"
    assert second.error == "registration failed: a plugin named 'acme' is already loaded"
    assert plugins.registry.resolve("sink", "acme.AcmeSink").__name__ == "AcmeSink"


def test_the_register_argument_matches_the_register_protocol() -> None:
    seen: list[inspect.Signature] = []

    class Probe:
        @staticmethod
        @bspump.hookimpl
        def register_sinks(register: bspump.hookspecs.Register) -> None:
            seen.append(inspect.signature(register))
            register(bspump.NullSink, name="Null")

    Plugins(load_entry_points=False).register("probe", Probe)
    protocol = inspect.signature(bspump.hookspecs.Register.__call__)
    assert list(protocol.parameters) == ["self", "cls", "name"]
    assert list(seen[0].parameters) == ["cls", "name"]
    assert [seen[0].parameters[name].default for name in ("cls", "name")] == [inspect.Parameter.empty, None]
    assert protocol.parameters["name"].default is None


# -- the registry knows why a plugin's types are missing ----------------------------------------------------
def test_a_type_of_a_plugin_that_failed_names_the_load_error() -> None:
    plugins, info = loaded("acme", '''
        @bspump.hookimpl
        def register_sink(register):
            register(AcmeSink, name="Sink")
    ''')
    assert info.status == "failed"
    with pytest.raises(bspump.PluginError) as raised:
        plugins.registry.resolve("sink", "acme.Sink")
    assert str(raised.value) == (
        "unknown sink type 'acme.Sink': plugin 'acme' is installed but failed to load: registration failed: "
        "unknown hook 'register_sink' (did you mean 'register_sinks'?)"
    )
    assert "pip install" not in str(raised.value)


def test_a_misspelled_type_of_a_loaded_plugin_does_not_suggest_installing_it() -> None:
    plugins, _ = loaded("acme", '''
        @bspump.hookimpl
        def register_sinks(register):
            register(AcmeSink, name="Sink")
    ''')
    with pytest.raises(bspump.PluginError) as raised:
        plugins.registry.resolve("sink", "acme.Snk")
    assert "did you mean 'acme.Sink'?" in str(raised.value)
    assert "pip install" not in str(raised.value)
    with pytest.raises(bspump.PluginError, match="pip install bspump-nothere"):
        plugins.registry.resolve("sink", "nothere.Sink")
