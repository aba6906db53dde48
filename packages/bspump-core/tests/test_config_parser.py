"""Parsing pipelines.conf: sections, kinds, IDs, order, line numbers and syntax errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from bspump.config import ConfigError, PipelinesConfig, load_config, parse_config

DATA = Path(__file__).parent / "data" / "config"


def test_seed_example_parses() -> None:
    cfg = load_config(DATA / "seed.conf", environ={"POSTGRES_PASSWORD": "s3cret"})
    conns = cfg.connections()
    assert list(conns) == ["KafkaConnection", "PostgreSQLConnection"]
    assert dict(conns["KafkaConnection"]) == {
        "bootstrap_servers": "kafka:9092",
        "security_protocol": "PLAINTEXT",
    }
    pg = conns["PostgreSQLConnection"]
    assert pg["password"] == "s3cret"
    assert pg["port"] == "5432"
    assert pg.line_of("password") == 10
    assert pg.file == str(DATA / "seed.conf")
    assert cfg.path == str(DATA / "seed.conf")


def test_seed_example_without_password_names_the_variable() -> None:
    with pytest.raises(ConfigError) as ei:
        load_config(DATA / "seed.conf", environ={})
    assert str(ei.value).endswith(
        "seed.conf:10 [connection:PostgreSQLConnection] password: "
        "environment variable POSTGRES_PASSWORD is not set "
        "(use ${POSTGRES_PASSWORD:-default} for a default)"
    )


@pytest.fixture
def full() -> PipelinesConfig:
    return load_config(DATA / "pipelines.conf", environ={"PG_PASSWORD": "pw"})


def test_kinds_ids_and_order(full: PipelinesConfig) -> None:
    names = [s.name for s in full.sections()]
    assert names == [
        "general",
        "connection:Kafka",
        "connection:PG",
        "lookup:Countries",
        "pipeline:Events",
        "pipeline:Events:KafkaSource",
        "pipeline:Events:PGSink",
        "pipeline:Audit:KafkaSource",
        "web",
    ]
    src = full.component("Events", "KafkaSource")
    assert src is not None
    assert (src.kind, src.ids, src.line) == ("pipeline", ("Events", "KafkaSource"), 22)
    web = full.section("web")
    assert web is not None and (web.kind, web.ids) == ("web", ())


def test_accessors_by_kind(full: PipelinesConfig) -> None:
    assert list(full.connections()) == ["Kafka", "PG"]
    assert list(full.lookups()) == ["Countries"]
    assert list(full.pipelines()) == ["Events"]  # components are not pipelines
    assert list(full.components("Events")) == ["KafkaSource", "PGSink"]
    assert list(full.components("Audit")) == ["KafkaSource"]
    assert full.components("Nope") == {}
    assert full.component("Events", "Nope") is None
    assert full.section("connection:Nope") is None
    assert (
        full.section("CONNECTION:PG") is full.connections()["PG"]
    )  # kind is case-insensitive


def test_continuation_lines_and_colon_separator(full: PipelinesConfig) -> None:
    kafka = full.connections()["Kafka"]
    assert kafka["bootstrap_servers"] == "kafka-1:9092\nkafka-2:9092"
    assert kafka.line_of("bootstrap_servers") == 7
    assert kafka["sasl_plain_password"] == ""
    assert full.connections()["PG"]["dsn"] == "postgresql://app:pw@db:5432/app"


def test_continuation_appends_to_a_value_on_the_key_line() -> None:
    cfg = parse_config("[web]\nhosts = a,\n  b\n\n  c\nport = 1\n")
    web = cfg.section("web")
    assert web is not None
    assert web["hosts"] == "a,\nb\nc"
    assert web["port"] == "1"


def test_comments_and_hash_inside_values() -> None:
    cfg = parse_config(
        "# top\n; also\n[connection:X]  # trailing comment on header\n"
        "  # indented comment\npassword = a#b;c\n"
    )
    assert dict(cfg.connections()["X"]) == {"password": "a#b;c"}


def test_keys_are_lower_cased_and_ids_are_kept() -> None:
    cfg = parse_config("[Connection: MyConn ]\nBootstrap_Servers = k\n")
    section = cfg.connections()["MyConn"]
    assert section.name == "connection:MyConn"
    assert list(section) == ["bootstrap_servers"]
    assert section["BOOTSTRAP_SERVERS"] == "k"
    assert section.line_of("Bootstrap_Servers") == 2


def test_redacted_replaces_secrets(full: PipelinesConfig) -> None:
    red = full.redacted()
    assert red["connection:Kafka"]["sasl_plain_password"] == "***"
    assert red["connection:PG"]["dsn"] == "postgresql://app:***@db:5432/app"
    assert red["web"] == {"listen": "0.0.0.0:8080"}
    assert "pw" not in repr(full.connections()["PG"])


def test_duplicate_key() -> None:
    with pytest.raises(ConfigError) as ei:
        parse_config("[connection:X]\nhost = a\nHOST = b\n", filename="p.conf")
    assert (
        str(ei.value)
        == "p.conf:3 [connection:X] host: duplicate key (first set on line 2)"
    )


def test_duplicate_section() -> None:
    with pytest.raises(ConfigError) as ei:
        parse_config("[connection:X]\n\n[connection:X]\n", filename="p.conf")
    assert (
        str(ei.value)
        == "p.conf:3 [connection:X]: duplicate section (first defined on line 1)"
    )


def test_unknown_kind_did_you_mean() -> None:
    with pytest.raises(ConfigError) as ei:
        parse_config("[conection:X]\n", filename="p.conf")
    msg = str(ei.value)
    assert msg.startswith("p.conf:1 [conection:X]: unknown section kind 'conection'")
    assert "did you mean 'connection'?" in msg
    assert (
        "known kinds: connection, general, logging, lookup, metrics, pipeline, web"
        in msg
    )


def test_unknown_kind_without_close_match() -> None:
    with pytest.raises(ConfigError) as ei:
        parse_config("[zzz]\n")
    assert "did you mean" not in str(ei.value)
    assert "unknown section kind 'zzz'" in str(ei.value)


def test_extra_kinds_are_accepted() -> None:
    cfg = parse_config("[asab:storage]\nx = 1\n", extra_kinds=["asab"])
    section = cfg.section("asab:storage")
    assert section is not None and section.ids == ("storage",)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (
            "[connection]\n",
            "wrong number of IDs for a 'connection' section; expected [connection:ID]",
        ),
        ("[connection:]\n", "empty ID in section header"),
        ("[connection:A:B]\n", "wrong number of IDs"),
        ("[pipeline]\n", "expected [pipeline:ID] or [pipeline:ID:ComponentID]"),
        ("[pipeline:A::B]\n", "empty ID"),
        ("[pipeline:A:B:C]\n", "wrong number of IDs"),
        ("[lookup]\n", "expected [lookup:ID]"),
        ("[web:a:b]\n", "expected [web] or [web:ID]"),
        ("[:X]\n", "empty section kind"),
    ],
)
def test_bad_section_ids(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as ei:
        parse_config(text, filename="p.conf")
    assert str(ei.value).startswith("p.conf:1 [")
    assert fragment in str(ei.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x = 1\n", "p.conf:1: key outside of any section"),
        ("[web]\njust some words\n", "p.conf:2 [web]: expected 'key = value'"),
        ("[web]\n = 1\n", "p.conf:2 [web]: empty key before the separator"),
        ("[web\n", "p.conf:1: malformed section header"),
    ],
)
def test_syntax_errors_name_file_and_line(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as ei:
        parse_config(text, filename="p.conf")
    assert str(ei.value).startswith(expected)


def test_malformed_line_does_not_echo_its_content() -> None:
    with pytest.raises(ConfigError) as ei:
        parse_config("[connection:X]\nhunter2\n")
    assert "hunter2" not in str(ei.value)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.conf"
    with pytest.raises(ConfigError) as ei:
        load_config(missing)
    assert str(ei.value) == f"{missing}: configuration file not found"
    assert ei.value.file == str(missing)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read configuration file"):
        load_config(tmp_path)


def test_bom_and_crlf_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "p.conf"
    path.write_bytes(b"\xef\xbb\xbf[connection:X]\r\nhost = h\r\n")
    assert dict(load_config(path).connections()["X"]) == {"host": "h"}


def test_empty_text_gives_empty_config() -> None:
    cfg = parse_config("")
    assert cfg.sections() == [] and cfg.connections() == {} and cfg.path is None


# -- indented keys, line endings, encoding -------------------------------------------------------


def test_indented_key_continues_the_value_and_is_reported() -> None:
    cfg = parse_config(
        "[pipeline:P:In]\ntype = core.FileSource\npath = in.jsonl\n  batch_size = 5\n\tformat=text\n",
        filename="p.conf",
        environ={},
    )
    # continuation semantics are kept (a multi-line value may hold such a line) ...
    assert cfg.component("P", "In") == {"type": "core.FileSource", "path": "in.jsonl\nbatch_size = 5\nformat=text"}
    # ... but each doubtful line is reported, with the line of the key it continues
    assert cfg.warnings == [
        "p.conf:4 [pipeline:P:In]: indented 'batch_size = 5' continues the value of 'path' (line 3); "
        "remove the indentation if it is a key of its own",
        "p.conf:5 [pipeline:P:In]: indented 'format = text' continues the value of 'path' (line 3); "
        "remove the indentation if it is a key of its own",
    ]


def test_ordinary_continuations_give_no_warning() -> None:
    cfg = parse_config(
        "[connection:K]\nbootstrap_servers = a:9092,\n  b:9092\nquery = SELECT *\n  WHERE x == 1\n  AND y > 2\n",
        environ={},
    )
    assert cfg.warnings == []
    assert parse_config("[connection:K]\nhost = h\n").warnings == []


def test_indented_key_warning_never_quotes_a_secret() -> None:
    cfg = parse_config(
        "[connection:K]\nhost = h\n  password = hunter2\n  dsn = pg://u:hunter2@h/db\n"
        "private_key = -----BEGIN KEY-----\n  Zm9vYmFyYmF6hunter2=\n",
        filename="p.conf",
        environ={},
    )
    text = "\n".join(cfg.warnings)
    assert "hunter2" not in text
    assert cfg.warnings[0].startswith(
        "p.conf:3 [connection:K]: indented 'password = ***' continues the value of 'host'"
    )
    assert "indented 'dsn = pg://u:***@h/db'" in cfg.warnings[1]
    assert cfg.warnings[2].startswith(
        "p.conf:6 [connection:K]: an indented line that reads like 'name = value' continues the value of "
        "'private_key' (line 5)"
    )


def test_indented_key_warning_is_short_for_a_long_line() -> None:
    cfg = parse_config("[connection:K]\nhost = h\n  path = " + "x" * 1_000_000 + "\n", environ={})
    assert len(cfg.warnings) == 1 and len(cfg.warnings[0]) < 250


def test_line_numbers_count_only_real_line_breaks() -> None:
    # a form feed or U+2028 inside a line does not end it: the numbers match what an editor shows
    cfg = parse_config("[connection:X]\na = 1\x0cstill a\nb = 2\u2028still b\rc = 3\r\nd = 4\n", filename="p.conf")
    x = cfg.connections()["X"]
    assert dict(x) == {"a": "1\x0cstill a", "b": "2\u2028still b", "c": "3", "d": "4"}
    assert [x.line_of(k) for k in "abcd"] == [2, 3, 4, 5]


def test_non_utf8_file_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "p.conf"
    path.write_bytes(b"[connection:X]\r\nhost = h\r\nuser = caf\xe9\r\n")
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    assert str(ei.value) == (
        f"{path}:3: not valid UTF-8: byte 0xe9 at column 11 (byte offset 36 in the file); save the file as UTF-8"
    )
    assert ei.value.line == 3


def test_non_utf8_byte_after_a_bom_is_counted_from_the_start_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "p.conf"
    path.write_bytes(b"\xef\xbb\xbf\xff[connection:X]\n")
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    assert str(ei.value) == (
        f"{path}:1: not valid UTF-8: byte 0xff at column 1 (byte offset 3 in the file); save the file as UTF-8"
    )


def test_huge_unknown_section_kind_is_cut_in_the_message() -> None:
    with pytest.raises(ConfigError) as ei:
        parse_config("[" + "k" * 5_000_000 + "\x00]\n", filename="p.conf")
    assert len(str(ei.value)) < 400 and "\x00" not in str(ei.value)


def test_a_value_continued_over_many_lines_is_joined_in_order() -> None:
    lines = [f"line {n}" for n in range(100_000)]
    cfg = parse_config("[connection:X]\nempty =\n  first\nk = a\n" + "".join(f"  {x}\n" for x in lines), environ={})
    x = cfg.connections()["X"]
    assert x["k"] == "a\n" + "\n".join(lines)
    assert x["empty"] == "first" and x.line_of("k") == 4
