"""Typed defaults with ranges and choices (Int, Float, Seconds, Choice): checked wherever a value enters
a ComponentConfig (file or constructor), by ``bspump check`` and when a component is built."""

from __future__ import annotations

import copy
import datetime
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import make_app

import bspump
from bspump.config import (
    Choice,
    ComponentConfig,
    ConfigError,
    Float,
    Int,
    Seconds,
    Section,
    parse_config,
    unbounded_numeric_keys,
)
from bspump.config.coerce import expected_type

DEFAULTS: dict[str, Any] = {
    "batch_size": Int(1000, min=1, max=100_000),
    "workers": Int(4, min=1),
    "ratio": Float(0.5, min=0.0, max=1.0),
    "reconnect_initial": Seconds(0.5, min=0.01),
    "timeout": Seconds(30.0),
    "format": Choice("json", ("text", "json"), aliases={"utf-8": "text", "utf8": "text"}),
    "security_protocol": Choice("PLAINTEXT", ("PLAINTEXT", "SSL", "SASL_SSL")),
    "mechanism": Choice("", ("PLAIN", "GSSAPI")),
    "password": Int(0, min=0, max=9),
}


def section(body: str) -> Section:
    return parse_config(f"[connection:K]\n{body}\n", filename="pipelines.conf", environ={}).connections()["K"]


def from_file(body: str) -> ComponentConfig:
    return ComponentConfig(DEFAULTS, section(body), label="connection:K")


def from_constructor(**overrides: Any) -> ComponentConfig:
    return ComponentConfig(DEFAULTS, None, overrides, label="connection:K")


def file_error(body: str) -> str:
    with pytest.raises(ConfigError) as ei:
        from_file(body)
    return str(ei.value)


def constructor_error(**overrides: Any) -> str:
    with pytest.raises(ConfigError) as ei:
        from_constructor(**overrides)
    return str(ei.value)


# -- values from the file ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("batch_size = 0", "batch_size: expected an integer from 1 to 100000, got '0'"),
        ("batch_size = -1", "batch_size: expected an integer from 1 to 100000, got '-1'"),
        ("batch_size = 100000000000000000000000000000",
         "batch_size: expected an integer from 1 to 100000, got '100000000000000000000000000000'"),
        ("batch_size = 1.5", "batch_size: expected an integer from 1 to 100000, got '1.5'"),
        ("batch_size = 1e3", "batch_size: expected an integer from 1 to 100000, got '1e3'"),
        ("batch_size =", "batch_size: expected an integer from 1 to 100000, got ''"),
        ("workers = 0", "workers: expected an integer of at least 1, got '0'"),
        ("ratio = 1.5", "ratio: expected a number from 0 to 1, got '1.5'"),
        ("ratio = nan", "ratio: expected a number from 0 to 1, got 'nan'"),
        ("ratio = abc", "ratio: expected a number from 0 to 1, got 'abc'"),
        ("reconnect_initial = 0", "reconnect_initial: expected a duration of at least 10ms, got '0'"),
        ("reconnect_initial = 5ms", "reconnect_initial: expected a duration of at least 10ms, got '5ms'"),
        ("reconnect_initial = soon",
         "reconnect_initial: expected a duration of at least 10ms (written like 1.5, 250ms, 2s, 5m or 1h), "
         "got 'soon'"),
        ("timeout = -1", "timeout: expected a duration such as 1.5, 250ms, 2s, 5m or 1h, got '-1'"),
        ("format = xml", "format: expected one of text, json, got 'xml'"),
        ("format =", "format: expected one of text, json, got ''"),
        ("security_protocol = TLS", "security_protocol: expected one of PLAINTEXT, SSL, SASL_SSL, got 'TLS'"),
    ],
)  # fmt: skip
def test_file_value_out_of_range_names_file_line_section_key(body: str, message: str) -> None:
    assert file_error(body) == f"pipelines.conf:2 [connection:K] {message}"


def test_file_values_in_range_are_stored_as_plain_types() -> None:
    c = from_file(
        "batch_size = 100000\nworkers = 10000000\nratio = 1\nreconnect_initial = 10ms\ntimeout = 5m\n"
        "format = UTF-8\nsecurity_protocol = sasl_ssl\nmechanism = plain"
    )
    assert dict(c) == {
        "batch_size": 100000, "workers": 10000000, "ratio": 1.0, "reconnect_initial": pytest.approx(0.01),
        "timeout": 300.0, "format": "text", "security_protocol": "SASL_SSL", "mechanism": "PLAIN",
        "password": 0,
    }  # fmt: skip
    for key, kind in (("batch_size", int), ("ratio", float), ("timeout", float), ("format", str)):
        assert type(c[key]) is kind, key


def test_defaults_themselves_are_stored_as_plain_types() -> None:
    c = ComponentConfig(DEFAULTS, label="x")
    assert type(c["batch_size"]) is int and type(c["timeout"]) is float and type(c["format"]) is str
    assert c["security_protocol"] == "PLAINTEXT" and c["mechanism"] == ""


def test_huge_value_and_nul_byte_give_a_short_message() -> None:
    huge = file_error("batch_size = " + "9" * 5_000_000)
    assert huge.startswith("pipelines.conf:2 [connection:K] batch_size: expected an integer from 1 to 100000, got '999")
    assert len(huge) < 200
    nul = file_error("format = te\x00xt")
    assert nul == "pipelines.conf:2 [connection:K] format: expected one of text, json, got 'te\\x00xt'"
    assert "\x00" not in nul
    long_duration = file_error("timeout = " + "9" * 400)  # overflows a float to infinity
    assert "timeout: expected a duration such as" in long_duration and len(long_duration) < 200


def test_a_secret_key_out_of_range_hides_its_value() -> None:
    assert file_error("password = 12") == (
        "pipelines.conf:2 [connection:K] password: expected an integer from 0 to 9 (value hidden)"
    )


# -- constructor overrides -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"batch_size": 0}, "batch_size: expected an integer from 1 to 100000, got 0"),
        ({"batch_size": -1}, "batch_size: expected an integer from 1 to 100000, got -1"),
        ({"batch_size": 10**29}, "batch_size: expected an integer from 1 to 100000, got 1" + "0" * 29),
        ({"batch_size": "0"}, "batch_size: expected an integer from 1 to 100000, got '0'"),
        ({"batch_size": True}, "batch_size: expected an integer from 1 to 100000, got True"),
        ({"batch_size": 2.0}, "batch_size: expected an integer from 1 to 100000, got 2.0"),
        ({"batch_size": None}, "batch_size: expected an integer from 1 to 100000, got None"),
        ({"ratio": float("inf")}, "ratio: expected a number from 0 to 1, got inf"),
        ({"ratio": 10**400}, "ratio: expected a number from 0 to 1, got 1" + "0" * 56 + "..."),
        ({"reconnect_initial": 0}, "reconnect_initial: expected a duration of at least 10ms, got 0"),
        ({"timeout": -0.5}, "timeout: expected a non-negative duration, got -0.5"),
        ({"timeout": datetime.timedelta(seconds=-1)}, "timeout: expected a non-negative duration, got timedelta"),
        ({"format": "xml"}, "format: expected one of text, json, got 'xml'"),
        ({"format": 3}, "format: expected one of text, json, got 3"),
        ({"format": b"json"}, "format: expected one of text, json, got bytes"),
    ],
)  # fmt: skip
def test_constructor_value_out_of_range_names_label_and_key(overrides: dict[str, Any], message: str) -> None:
    assert constructor_error(**overrides) == f"[connection:K] {message}"


def test_constructor_values_are_checked_and_stored_plain() -> None:
    c = from_constructor(
        batch_size=7, ratio=1, reconnect_initial="250ms", timeout=datetime.timedelta(minutes=2),
        format="JSON", security_protocol="ssl",
    )  # fmt: skip
    assert c["batch_size"] == 7 and type(c["batch_size"]) is int
    assert c["ratio"] == 1.0 and type(c["ratio"]) is float
    assert c["reconnect_initial"] == pytest.approx(0.25)
    assert c["timeout"] == 120.0
    assert c["format"] == "json" and c["security_protocol"] == "SSL"


def test_constructor_overrides_a_bad_file_value_is_still_an_error_of_the_file() -> None:
    # the file is read first; its bad value is reported even if the constructor would replace it
    with pytest.raises(ConfigError, match=r"^pipelines.conf:2 \[connection:K\] batch_size"):
        ComponentConfig(DEFAULTS, section("batch_size = 0"), {"batch_size": 5}, label="connection:K")


def test_non_strict_config_still_checks_declared_keys() -> None:
    c = ComponentConfig(DEFAULTS, section("anything = 1"), label="connection:K", strict=False)
    assert c.unknown_keys == ["anything"]
    with pytest.raises(ConfigError, match="batch_size: expected an integer from 1 to 100000"):
        ComponentConfig(DEFAULTS, section("anything = 1\nbatch_size = 0"), label="connection:K", strict=False)


# -- getters -------------------------------------------------------------------------------------


def test_getters_return_plain_types() -> None:
    c = from_file("batch_size = 5\ntimeout = 2s")
    assert type(c.getint("batch_size")) is int and c.getint("batch_size") == 5
    assert type(c.getint("workers")) is int
    assert type(c.getfloat("ratio")) is float
    assert type(c.getseconds("timeout")) is float and c.getseconds("timeout") == 2.0
    assert type(c.getseconds("nope", Seconds(3))) is float


def test_getchoice_returns_the_canonical_spelling() -> None:
    c = from_file("format = utf8\nsecurity_protocol = plaintext")
    assert c.getchoice("format") == "text"
    assert c.getchoice("FORMAT") == "text"
    assert c.getchoice("security_protocol") == "PLAINTEXT"
    assert type(c.getchoice("format")) is str
    with pytest.raises(TypeError, match="'batch_size' is not declared as a Choice"):
        c.getchoice("batch_size")


# -- the markers themselves ----------------------------------------------------------------------


def test_seconds_stays_backward_compatible() -> None:
    s = Seconds(0.5)
    assert s == 0.5 and isinstance(s, float)
    assert s.min == 0.0 and s.max is None
    assert type(s * 2) is float and s * 2 == 1.0
    assert expected_type(s) == "a duration such as 1.5, 250ms, 2s, 5m or 1h"
    c = ComponentConfig({"t": Seconds(0.5)}, None, {"t": "250ms"}, label="x")
    assert c["t"] == pytest.approx(0.25) and type(c["t"]) is float


def test_arithmetic_on_markers_gives_plain_values() -> None:
    n = Int(10, min=1)
    assert type(n + 1) is int and type(n * n) is int and type(-n) is int and type(n // 3) is int
    f = Float(1.5, min=0)
    assert type(f + 1) is float and type(f / 2) is float
    c = Choice("text", ("text", "json"))
    assert type(c + "x") is str and type(c.upper()) is str


@pytest.mark.parametrize(
    ("default", "words"),
    [
        (Int(5), "an integer"),
        (Int(5, min=1), "an integer of at least 1"),
        (Int(5, max=10), "an integer of at most 10"),
        (Int(5, min=1, max=10), "an integer from 1 to 10"),
        (Float(0.5, min=0, max=1), "a number from 0 to 1"),
        (Float(0.5, min=0.25), "a number of at least 0.25"),
        (Seconds(1, min=0.01), "a duration of at least 10ms (written like 1.5, 250ms, 2s, 5m or 1h)"),
        (Seconds(1, max=300), "a duration from 0s to 5m (written like 1.5, 250ms, 2s, 5m or 1h)"),
        (Seconds(1, min=None, max=90), "a duration of at most 90s (written like 1.5, 250ms, 2s, 5m or 1h)"),
        (Seconds(2, min=1.5, max=7200), "a duration from 1.5s to 2h (written like 1.5, 250ms, 2s, 5m or 1h)"),
        (Choice("json", ("text", "json")), "one of text, json"),
    ],
)
def test_expected_type_describes_the_range(default: Any, words: str) -> None:
    assert expected_type(default) == words


@pytest.mark.parametrize(
    "build",
    [
        lambda: Int(0, min=1),
        lambda: Int(5, min=10, max=1),
        lambda: Float(2.0, max=1.0),
        lambda: Seconds(-1),
        lambda: Choice("xml", ("text", "json")),
        lambda: Choice("text", ()),
        lambda: Choice("text", ("text", "TEXT")),
        lambda: Choice("text", ("text", "json"), aliases={"utf-8": "yaml"}),
        lambda: Choice("text", ("text", "json"), aliases={"JSON": "text"}),
    ],
)
def test_inconsistent_declarations_are_programming_errors(build: Any) -> None:
    with pytest.raises(ValueError):
        build()


def test_wrong_types_in_declarations_are_programming_errors() -> None:
    with pytest.raises(TypeError):
        Int(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Int(True)
    with pytest.raises(TypeError):
        Float("1")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Choice(1, ("a",))  # type: ignore[arg-type]


def test_choice_default_is_canonicalised_and_aliases_are_case_insensitive() -> None:
    c = Choice("plaintext", ("PLAINTEXT", "SSL"), aliases={"TLS": "ssl"})
    assert c == "PLAINTEXT" and c.choices == ("PLAINTEXT", "SSL")
    assert c.check("tls") == "SSL" and c.check(" Ssl ") == "SSL"
    assert dict(c.aliases) == {"TLS": "ssl"}


def test_empty_choice_default_means_not_set() -> None:
    assert Choice("", ("PLAIN",)).check("") == ""
    with pytest.raises(ValueError):
        Choice("PLAIN", ("PLAIN",)).check("")


@pytest.mark.parametrize("marker", list(DEFAULTS.values()))
def test_markers_survive_copy_and_pickle(marker: Any) -> None:
    for clone in (copy.deepcopy(marker), pickle.loads(pickle.dumps(marker))):
        assert type(clone) is type(marker) and clone == marker
        assert clone.describe() == marker.describe()


def test_unbounded_numeric_keys() -> None:
    defaults = {
        "plain_int": 1, "plain_float": 1.0, "flag": True, "name": "x", "none": None,
        "bare_int": Int(1), "bare_float": Float(1.0), "int": Int(1, min=0), "float": Float(1.0, max=2.0),
        "seconds": Seconds(1), "choice": Choice("a", ("a",)),
    }  # fmt: skip
    assert unbounded_numeric_keys(defaults) == ["plain_int", "plain_float", "bare_int", "bare_float"]


# -- building components and `bspump check` ------------------------------------------------------


class Batches(bspump.Connection):
    ConfigDefaults = {"batch_size": Int(100, min=1, max=10_000), "poll": Seconds(1.0, min=0.01)}

    async def connect(self) -> None:
        pass


def test_building_a_component_rejects_a_bad_constructor_value() -> None:
    app = make_app()
    with pytest.raises(ConfigError) as ei:
        Batches(app, "B", config={"batch_size": 0})
    assert str(ei.value) == "[connection:B] batch_size: expected an integer from 1 to 10000, got 0"
    assert Batches(app, "B2", config={"poll": "20ms"}).Config["poll"] == pytest.approx(0.02)


def test_building_a_component_rejects_a_bad_file_value() -> None:
    config = parse_config("[connection:B]\n\npoll = 0\n", filename="pipelines.conf", environ={})
    with pytest.raises(ConfigError) as ei:
        Batches(make_app(config), "B")
    assert str(ei.value) == "pipelines.conf:3 [connection:B] poll: expected a duration of at least 10ms, got '0'"


BATCHES_MODULE = """
import bspump
from bspump.config import Int

class Batches(bspump.Connection):
    ConfigDefaults = {"batch_size": Int(100, min=1, max=10_000)}

    async def connect(self):
        pass
"""


@pytest.mark.parametrize("value", ["0", "-1", "100000000000000000000000000000"])
def test_bspump_check_rejects_a_value_out_of_range(tmp_path: Path, value: str) -> None:
    (tmp_path / "batches_mod.py").write_text(BATCHES_MODULE)
    conf = tmp_path / "pipelines.conf"
    conf.write_text(textwrap.dedent(f"""\
        [connection:B]
        type = batches_mod:Batches
        batch_size = {value}
    """))
    src = Path(__file__).resolve().parents[1] / "src"
    result = subprocess.run(
        [sys.executable, "-m", "bspump.cli", "check", str(conf)], capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(src)}, cwd=tmp_path, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"pipelines.conf:3 [connection:B] batch_size: expected an integer from 1 to 10000, got '{value}'" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr
