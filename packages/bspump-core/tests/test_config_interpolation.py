"""Environment-variable interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, $$."""

from __future__ import annotations

import pytest

from bspump.config import ConfigError, parse_config
from bspump.config.interpolation import MAX_NESTING, interpolate


def value(text: str, env: dict[str, str]) -> str:
    return interpolate(
        text, env, file="f.conf", line=1, section="connection:X", key="k"
    )


def test_set_variable_is_substituted() -> None:
    assert value("${HOST}:${PORT}", {"HOST": "db", "PORT": "5432"}) == "db:5432"


def test_default_used_when_unset() -> None:
    assert value("${HOST:-localhost}", {}) == "localhost"


def test_colon_dash_default_used_when_empty() -> None:
    assert value("${HOST:-localhost}", {"HOST": ""}) == "localhost"


def test_dash_default_only_when_unset() -> None:
    assert value("${HOST-localhost}", {"HOST": ""}) == ""
    assert value("${HOST-localhost}", {}) == "localhost"


def test_set_variable_wins_over_default() -> None:
    assert value("${HOST:-localhost}", {"HOST": "db"}) == "db"


def test_empty_default() -> None:
    assert value("a${X:-}b", {}) == "ab"


def test_default_may_hold_colons_and_urls() -> None:
    assert value("${URL:-http://h:80/p}", {}) == "http://h:80/p"


def test_nested_default_is_expanded_only_when_used() -> None:
    assert value("${A:-${B}}", {"B": "b"}) == "b"
    assert value("${A:-${B}}", {"A": "a"}) == "a"  # B unset but not needed


def test_double_dollar_is_literal_dollar() -> None:
    assert value("pa$$word$${X}", {"X": "no"}) == "pa$word${X}"


def test_lone_dollar_is_kept() -> None:
    assert value("pa$word $", {}) == "pa$word $"


def test_unset_without_default_names_everything() -> None:
    with pytest.raises(ConfigError) as ei:
        parse_config(
            "[connection:PG]\nhost = h\n\npassword = ${POSTGRES_PASSWORD}\n",
            filename="pipelines.conf",
            environ={},
        )
    e = ei.value
    assert str(e) == (
        "pipelines.conf:4 [connection:PG] password: environment variable POSTGRES_PASSWORD "
        "is not set (use ${POSTGRES_PASSWORD:-default} for a default)"
    )
    assert (e.file, e.line, e.section, e.key) == (
        "pipelines.conf",
        4,
        "connection:PG",
        "password",
    )


def test_unused_section_still_fails_fast() -> None:
    with pytest.raises(ConfigError, match="MISSING"):
        parse_config("[lookup:Nobody]\nurl = ${MISSING}\n", environ={})


def test_unterminated_reference_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"f.conf:1 \[connection:X\] k: unterminated"):
        value("${HOST", {"HOST": "x"})


@pytest.mark.parametrize("text", ["${}", "${1X}", "${X?err}", "${X:default}"])
def test_malformed_reference_is_an_error(text: str) -> None:
    with pytest.raises(ConfigError, match="k: invalid"):
        value(text, {"X": "1"})


def test_section_names_and_keys_are_not_interpolated() -> None:
    cfg = parse_config("[connection:${X}]\n${Y} = 1\n", environ={})
    section = cfg.section("connection:${X}")
    assert section is not None
    assert dict(section) == {"${y}": "1"}


def test_environ_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BSPUMP_TEST_HOST", "from-env")
    cfg = parse_config("[connection:PG]\nhost = ${BSPUMP_TEST_HOST}\n")
    assert cfg.connections()["PG"]["host"] == "from-env"


# -- nesting limit and long values ---------------------------------------------------------------


def nested(depth: int, inner: str = "x") -> str:
    names = [f"V{i}" for i in range(depth)]
    return "".join(f"${{{n}:-" for n in names) + inner + "}" * depth


def test_nesting_up_to_the_limit_expands() -> None:
    assert value(nested(MAX_NESTING), {}) == "x"
    assert value(nested(MAX_NESTING), {"V5": "five"}) == "five"


def test_deep_nesting_is_a_located_error_not_a_recursion_error() -> None:
    with pytest.raises(ConfigError) as ei:
        parse_config(f"[connection:X]\n\nk = {nested(2000)}\n", filename="p.conf", environ={})
    assert str(ei.value) == f"p.conf:3 [connection:X] k: variable references nested more than {MAX_NESTING} deep"


def test_too_deep_nesting_is_an_error_even_when_the_default_is_not_used() -> None:
    # the verdict must not depend on the environment the file is checked in
    with pytest.raises(ConfigError, match="nested more than"):
        value(nested(MAX_NESTING + 1), {"V0": "set"})


def test_dollar_before_a_closing_brace_is_literal() -> None:
    assert value("${A:-x$}", {}) == "x$"
    assert value("${A:-$$}", {}) == "$"
    assert value("${A:-a}$}", {}) == "a$}"
    assert value("}${A:-{b}}", {}) == "}{b}"


def test_a_megabyte_value_with_many_references_expands_correctly() -> None:
    text = nested(MAX_NESTING - 1, "$x${B}" * 100_000)
    assert value(text, {"B": "b"}) == "$xb" * 100_000
    assert value("$a" * 500_000, {}) == "$a" * 500_000


def test_unterminated_reference_in_a_long_value() -> None:
    with pytest.raises(ConfigError, match="unterminated"):
        value("${A:-" + "$a}" * 100_000 + "${B", {})


def test_a_huge_variable_name_is_cut_in_the_message() -> None:
    with pytest.raises(ConfigError) as ei:
        value("${" + "A" * 1_000_000 + "}", {})
    assert len(str(ei.value)) < 300 and "AAA..." in str(ei.value)
