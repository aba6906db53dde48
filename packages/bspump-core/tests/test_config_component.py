"""ComponentConfig: precedence, coercion, strictness, typed getters, origins, redaction."""

from __future__ import annotations

import enum
from pathlib import PurePosixPath
from typing import Any

import pytest

from bspump.config import ComponentConfig, ConfigError, Seconds, Section, parse_config

PG_DEFAULTS: dict[str, Any] = {
    "host": "localhost",
    "port": 5432,
    "user": None,
    "password": "",
    "ssl": False,
    "timeout": 10.0,
    "hosts": [],
    "tags": (),
}


def pg_section(body: str) -> Section:
    cfg = parse_config(
        f"[connection:PG]\n{body}", filename="pipelines.conf", environ={}
    )
    return cfg.connections()["PG"]


def make(
    body: str = "", overrides: dict[str, Any] | None = None, **kw: Any
) -> ComponentConfig:
    return ComponentConfig(
        PG_DEFAULTS, pg_section(body), overrides, label="connection:PG", **kw
    )


# -- precedence ----------------------------------------------------------------------------------


def test_defaults_only() -> None:
    c = ComponentConfig(PG_DEFAULTS, label="connection:PG")
    assert dict(c) == PG_DEFAULTS
    assert c.origin("port") == "default"


def test_file_overrides_defaults_and_constructor_overrides_file() -> None:
    c = make("host = db\nport = 6543\n", {"port": 7000})
    assert c["host"] == "db"
    assert c["port"] == 7000
    assert c["user"] is None
    assert c.origin("host") == "pipelines.conf:2 [connection:PG]"
    assert c.origin("port") == "constructor"
    assert c.origin("user") == "default"


def test_string_override_is_coerced_like_a_file_value() -> None:
    c = make(overrides={"port": "6000", "ssl": "yes"})
    assert c["port"] == 6000 and c["ssl"] is True


def test_non_string_override_is_kept_as_given() -> None:
    c = make(overrides={"hosts": ("a", "b")})
    assert c["hosts"] == ("a", "b")


def test_bad_string_override_names_label_and_key() -> None:
    with pytest.raises(ConfigError) as ei:
        make(overrides={"port": "abc"})
    assert str(ei.value) == "[connection:PG] port: expected an integer, got 'abc'"
    assert ei.value.file is None and ei.value.section == "connection:PG"


def test_keys_are_case_insensitive() -> None:
    c = ComponentConfig({"Port": 1}, None, {"PORT": "2"}, label="x")
    assert list(c) == ["port"]
    assert c["PoRt"] == 2 and c.get("PORT") == 2 and "PORT" in c


def test_defaults_colliding_by_case_are_a_programming_error() -> None:
    with pytest.raises(ValueError, match="twice"):
        ComponentConfig({"a": 1, "A": 2}, label="x")


# -- coercion ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True), ("TRUE", True), ("yes", True), ("On", True), ("1", True),
        ("false", False), ("No", False), ("off", False), ("0", False),
    ],
)  # fmt: skip
def test_bool_coercion(text: str, expected: bool) -> None:
    assert make(f"ssl = {text}\n")["ssl"] is expected


def test_int_float_str_none_coercion() -> None:
    c = make("port = 15432\ntimeout = 2.5\nhost = db\nuser = app\n")
    assert c["port"] == 15432 and type(c["port"]) is int
    assert c["timeout"] == 2.5
    assert c["host"] == "db"
    assert c["user"] == "app"  # default None keeps the raw string


def test_float_accepts_integer_text() -> None:
    assert make("timeout = 3\n")["timeout"] == 3.0


def test_list_and_tuple_coercion() -> None:
    c = make("hosts = a, b,,\n  c\n\ntags = x,y\n")
    assert c["hosts"] == ["a", "b", "c"]
    assert c["tags"] == ("x", "y")


def test_seconds_default_accepts_units() -> None:
    c = ComponentConfig({"timeout": Seconds(5)}, None, {"timeout": "250ms"}, label="x")
    assert c["timeout"] == pytest.approx(0.25)


class Mode(enum.Enum):
    FAST = "fast"
    SAFE = "safe"


def test_enum_and_path_coercion() -> None:
    defaults = {"mode": Mode.FAST, "dir": PurePosixPath("/tmp")}
    c = ComponentConfig(defaults, None, {"mode": "SAFE", "dir": "/var/lib"}, label="x")
    assert c["mode"] is Mode.SAFE
    assert c["dir"] == PurePosixPath("/var/lib")
    with pytest.raises(
        ConfigError, match="mode: expected one of: fast, safe, got 'slow'"
    ):
        ComponentConfig(defaults, None, {"mode": "slow"}, label="x")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "port = abc\n",
            "pipelines.conf:2 [connection:PG] port: expected an integer, got 'abc'",
        ),
        (
            "\nport = 1.5\n",
            "pipelines.conf:3 [connection:PG] port: expected an integer, got '1.5'",
        ),
        (
            "timeout = soon\n",
            "pipelines.conf:2 [connection:PG] timeout: expected a number, got 'soon'",
        ),
        (
            "ssl = maybe\n",
            (
                "pipelines.conf:2 [connection:PG] ssl: expected a boolean "
                "(true/false, yes/no, on/off, 1/0), got 'maybe'"
            ),
        ),
    ],
)
def test_coercion_errors_name_file_line_section_key_and_type(
    body: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as ei:
        make(body)
    assert str(ei.value) == expected
    assert ei.value.key is not None and ei.value.section == "connection:PG"


def test_bad_secret_value_is_not_in_the_message() -> None:
    defaults = {"password": 0, "api_key": 0}
    section = parse_config(
        "[connection:S]\npassword = hunter2\n", filename="p.conf"
    ).connections()["S"]
    with pytest.raises(ConfigError) as ei:
        ComponentConfig(defaults, section, label="connection:S")
    assert "hunter2" not in str(ei.value)
    assert (
        str(ei.value)
        == "p.conf:2 [connection:S] password: expected an integer (value hidden)"
    )
    with pytest.raises(ConfigError) as ei:
        ComponentConfig(
            defaults, None, {"api_key": "sk-live-123"}, label="connection:S"
        )
    assert "sk-live-123" not in str(ei.value)


def test_credentials_in_a_non_secret_value_are_hidden_in_errors() -> None:
    with pytest.raises(ConfigError) as ei:
        ComponentConfig({"port": 1}, None, {"port": "pg://u:hunter2@h"}, label="x")
    assert "hunter2" not in str(ei.value)
    assert "pg://u:***@h" in str(ei.value)


# -- strictness ----------------------------------------------------------------------------------


def test_strict_unknown_file_key_did_you_mean() -> None:
    section = parse_config(
        "[connection:Kafka]\n\n\nbootstrap_server = k:9092\n", filename="pipelines.conf"
    ).connections()["Kafka"]
    with pytest.raises(ConfigError) as ei:
        ComponentConfig(
            {"bootstrap_servers": "", "client_id": "bspump"},
            section,
            label="connection:Kafka",
        )
    assert str(ei.value) == (
        "pipelines.conf:4 [connection:Kafka] bootstrap_server: unknown key; "
        "did you mean 'bootstrap_servers'? (known keys: bootstrap_servers, client_id)"
    )


def test_strict_unknown_override_key() -> None:
    with pytest.raises(ConfigError) as ei:
        make(overrides={"prot": 1})
    assert str(ei.value).startswith(
        "[connection:PG] prot: unknown key; did you mean 'port'? (known keys: host, hosts,"
    )


def test_unknown_key_without_close_match_and_without_known_keys() -> None:
    with pytest.raises(ConfigError) as ei:
        make(overrides={"zzzzzz": 1})
    assert "did you mean" not in str(ei.value) and "known keys:" in str(ei.value)
    with pytest.raises(ConfigError, match="this component takes no configuration"):
        ComponentConfig({}, None, {"x": 1}, label="x")


def test_non_strict_keeps_and_reports_unknown_keys() -> None:
    c = make("extra = 1\n", {"other": 2, "EXTRA": "3"}, strict=False)
    assert c.unknown_keys == ["extra", "other"]
    assert c["extra"] == "3" and c["other"] == 2
    assert c.origin("extra") == "constructor"


def test_type_key_is_reserved() -> None:
    c = make("type = postgresql.PostgreSQLConnection\n")
    assert c["type"] == "postgresql.PostgreSQLConnection"
    assert c.unknown_keys == []


# -- typed getters -------------------------------------------------------------------------------


def test_getters_on_coerced_values() -> None:
    c = make("port = 1\nssl = on\ntimeout = 1.5\nhosts = a,b\n")
    assert c.getint("port") == 1
    assert c.getboolean("ssl") is True
    assert c.getfloat("timeout") == 1.5
    assert c.getfloat("port") == 1.0
    assert c.getlist("hosts") == ["a", "b"]
    assert c.getseconds("timeout") == 1.5


def test_getters_parse_raw_strings() -> None:
    c = ComponentConfig(
        {"a": None, "b": None, "c": None, "d": None, "e": None, "f": None},
        None,
        {"a": "42", "b": "0.5", "c": "off", "d": "x\ny, z", "e": "5m", "f": "250ms"},
        label="x",
    )
    assert c.getint("a") == 42
    assert c.getfloat("b") == 0.5
    assert c.getboolean("c") is False
    assert c.getlist("d") == ["x", "y", "z"]
    assert c.getseconds("e") == 300.0
    assert c.getseconds("f") == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1.5", 1.5),
        ("2s", 2.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("10 MS", 0.01),
    ],
)
def test_getseconds_units(text: str, seconds: float) -> None:
    c = ComponentConfig({"t": "1s"}, None, {"t": text}, label="x")
    assert c.getseconds("t") == pytest.approx(seconds)


def test_getseconds_rejects_garbage_with_origin() -> None:
    c = ComponentConfig(
        {"t": "1s"}, pg_section("t = 5 minutes\n"), label="x", strict=False
    )
    with pytest.raises(ConfigError) as ei:
        c.getseconds("t")
    assert str(ei.value) == (
        "pipelines.conf:2 [connection:PG] t: expected a duration such as 1.5, 250ms, 2s, 5m or 1h,"
        " got '5 minutes'"
    )


def test_getter_on_bad_string_names_origin() -> None:
    c = make("user = abc\n")
    with pytest.raises(
        ConfigError,
        match=r"pipelines.conf:2 \[connection:PG\] user: expected an integer",
    ):
        c.getint("user")


def test_getter_on_wrong_python_type() -> None:
    c = make(overrides={"ssl": 1})
    with pytest.raises(
        ConfigError, match=r"\[connection:PG\] ssl: expected a boolean .*got int$"
    ):
        c.getboolean("ssl")


def test_missing_required_key() -> None:
    c = make()
    with pytest.raises(ConfigError) as ei:
        c.getint("user")  # default None, not set anywhere
    assert (
        str(ei.value) == "pipelines.conf:1 [connection:PG] user: missing required key"
    )
    with pytest.raises(ConfigError, match=r"^\[x\] nope: missing required key$"):
        ComponentConfig({}, label="x").getint("nope")


def test_getter_defaults_apply_when_absent() -> None:
    c = make()
    assert c.getint("user", 7) == 7
    assert c.getlist("nope", ["a"]) == ["a"]
    assert c.getboolean("nope", False) is False
    assert c.getseconds("nope", 1.0) == 1.0
    assert c.get("nope") is None and c.get("nope", 3) == 3


def test_origin_of_unknown_key_raises_key_error() -> None:
    with pytest.raises(KeyError):
        make().origin("nope")


# -- redaction -----------------------------------------------------------------------------------


def test_repr_and_redacted_hide_secrets() -> None:
    c = make("password = hunter2\nhost = pg://u:hunter2@h/db\n")
    assert "hunter2" not in repr(c)
    red = c.redacted()
    assert red["password"] == "***"
    assert red["host"] == "pg://u:***@h/db"
    assert red["port"] == 5432
    assert c["password"] == "hunter2"  # the real value is still there for the component
    assert repr(c).startswith("ComponentConfig('connection:PG', {")
