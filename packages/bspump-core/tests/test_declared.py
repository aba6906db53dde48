"""pipelines.conf declaring whole pipelines with ``type = ...``, and the errors a deployment can make."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import make_app, run_app, write_conf

import bspump
from bspump.config import load_config

ENRICH_MODULE = '''
import bspump


class Enrich(bspump.Processor):
    """Adds the country name from a lookup; drops bots."""

    ConfigDefaults = {"lookup": "Countries", "drop_agent": "bot"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lookup = self.app.get_service("bspump.PumpService").locate_lookup(self.Config.get("lookup"))
        self.drop_agent = self.Config.get("drop_agent")

    def process(self, context, event):
        if event.get("agent") == self.drop_agent:
            return None
        country = self.lookup.get(event["cc"], {}).get("name", "unknown")
        return {**event, "country": country}
'''


def declared_conf(tmp_path: Path, extra: str = "") -> Path:
    (tmp_path / "declared_plugins_mod.py").write_text(ENRICH_MODULE)
    (tmp_path / "countries.csv").write_text("code,name\ncz,Czechia\nde,Germany\n")
    (tmp_path / "in.jsonl").write_text(
        '{"cc": "cz", "agent": "firefox"}\n'
        "this is not json\n"
        "\n"
        '{"cc": "de", "agent": "bot"}\n'
        '{"cc": "xx", "agent": "curl"\n'
        '{"cc": "de", "agent": "curl"}\n'
    )
    return write_conf(tmp_path, textwrap.dedent(f"""\
        [general]
        state_dir = {tmp_path}/state

        [lookup:Countries]
        type = core.FileLookup
        path = {tmp_path}/countries.csv
        key = code

        [pipeline:Logs]
        error_policy = dead-letter
        dead_letter = DL
        components = In, Enrich, Out

        [pipeline:Logs:In]
        type = core.FileSource
        path = {tmp_path}/in.jsonl
        batch_size = ${{BATCH:-2}}

        [pipeline:Logs:Enrich]
        type = declared_plugins_mod:Enrich
        lookup = Countries

        [pipeline:Logs:Out]
        type = core.FileSink
        path = {tmp_path}/out/result.jsonl
        mode = truncate

        [pipeline:Logs:DL]
        type = core.FileSink
        path = {tmp_path}/dead-letter.jsonl
        """) + extra)


def read_jsonl(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_declared_pipeline_runs_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    app = make_app(declared_conf(tmp_path))
    assert app.pump_service.lookups["Countries"].Config.get("key") == "code"
    assert await run_app(app) == 0
    pipeline = app.pump_service.pipelines["Logs"]
    assert [type(c).__name__ for c in pipeline.components] == ["FileSource", "Enrich", "FileSink", "FileSink"]
    assert pipeline.sources[0].batch_size == 2
    assert read_jsonl(tmp_path / "out" / "result.jsonl") == [
        {"cc": "cz", "agent": "firefox", "country": "Czechia"},
        {"cc": "de", "agent": "curl", "country": "Germany"},
    ]
    letters = read_jsonl(tmp_path / "dead-letter.jsonl")
    assert [letter["event"] for letter in letters] == ["this is not json", '{"cc": "xx", "agent": "curl"']
    assert all(letter["error"].startswith("JSONDecodeError") for letter in letters)
    assert all(letter["error_component"] == "Logs.In" for letter in letters)
    m = pipeline.metrics()
    assert (m["in"], m["out"], m["errors"], m["in_flight"]) == (5, 2, 2, 0)
    assert m["components"]["Enrich"]["dropped"] == 1


UNKNOWN_TYPES = [
    ("[pipeline:Logs:In]", "core.FileSource", "core.FileSorce", "core.FileSource"),
    ("[pipeline:Logs:Out]", "core.FileSink", "core.FileSnk", "core.FileSink"),
    ("[lookup:Countries]", "core.FileLookup", "core.FileLokup", "core.FileLookup"),
]


@pytest.mark.parametrize(("header", "right", "wrong", "suggestion"), UNKNOWN_TYPES)
async def test_unknown_type_did_you_mean_names_file_line_section_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, header: str, right: str, wrong: str, suggestion: str
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    path = declared_conf(tmp_path)
    lines = path.read_text().splitlines()
    start = lines.index(header)
    line_no = next(i for i in range(start, len(lines)) if lines[i] == f"type = {right}") + 1
    lines[line_no - 1] = f"type = {wrong}"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(bspump.ConfigError) as info:
        app = make_app(path)
        await run_app(app)
    error = info.value
    assert (error.file, error.line, error.section, error.key) == (str(path), line_no, header[1:-1], "type")
    assert f"{path}:{line_no} {header} type:" in str(error)
    assert f"did you mean '{suggestion}'" in str(error)


async def test_module_class_type_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    path = declared_conf(tmp_path)
    text = path.read_text()
    for wrong, message in (("declared_plugins_mod:Nope", "has no 'Nope'"),
                           ("no_such_module_xyz:Enrich", "cannot import 'no_such_module_xyz'"),
                           ("json:dumps", "is not a class"),
                           ("core.FileLookup", "is a lookup type; a pipeline component must be a source, "
                                               "processor, sink")):
        path.write_text(text.replace("type = declared_plugins_mod:Enrich", f"type = {wrong}"))
        with pytest.raises(bspump.ConfigError, match=message) as info:
            await run_app(make_app(path))
        assert info.value.section == "pipeline:Logs:Enrich" and info.value.key == "type"


def test_unset_variable_is_an_error_naming_file_section_key(tmp_path: Path) -> None:
    path = declared_conf(tmp_path, "\n[connection:PG]\npassword = ${PG_PASSWORD}\n")
    with pytest.raises(bspump.ConfigError) as info:
        make_app(path)
    error = info.value
    assert error.file == str(path) and error.section == "connection:PG" and error.key == "password"
    assert "PG_PASSWORD" in str(error)
    # with the variable set, the value arrives (and is redacted when shown)
    app = make_app(path, environ={"PG_PASSWORD": "s3cret"})
    assert app.config.section("connection:PG")["password"] == "s3cret"
    assert "s3cret" not in repr(app.config.section("connection:PG"))


async def test_bad_value_type_is_an_error_naming_file_line_section_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    path = declared_conf(tmp_path)
    app = make_app(path, environ={"BATCH": "lots"})
    with pytest.raises(bspump.ConfigError) as info:
        await run_app(app)
    line = path.read_text().splitlines().index("batch_size = ${BATCH:-2}") + 1
    assert str(info.value) == (f"{path}:{line} [pipeline:Logs:In] batch_size: expected an integer from 1 to 1000000, "
                               "got 'lots'")


async def test_unknown_key_in_pipeline_section_did_you_mean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    path = declared_conf(tmp_path)
    path.write_text(path.read_text().replace("error_policy = dead-letter", "error_polcy = dead-letter"))
    with pytest.raises(bspump.ConfigError) as info:
        await run_app(make_app(path))
    assert info.value.section == "pipeline:Logs" and info.value.key == "error_polcy"
    assert "did you mean 'error_policy'" in str(info.value)
    assert str(info.value).startswith(f"{path}:")


async def test_unknown_key_in_pipeline_section_of_a_python_pipeline(tmp_path: Path) -> None:
    path = write_conf(tmp_path, "[pipeline:Mine]\nmax_in_fligth = 5\n")
    app = make_app(path)

    class Mine(bspump.Pipeline):
        def __init__(self, app: Any, pipeline_id: str) -> None:
            super().__init__(app, pipeline_id)
            self.build(bspump.MemorySource(app, self), bspump.MemorySink(app, self))

    with pytest.raises(bspump.ConfigError, match=r"pipelines.conf:2 \[pipeline:Mine\] max_in_fligth: unknown key; "
                                                 r"did you mean 'max_in_flight'"):
        Mine(app, "Mine")


async def test_unknown_key_in_component_section_of_a_strict_component(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    path = declared_conf(tmp_path)
    path.write_text(path.read_text().replace("mode = truncate", "mode = truncate\nfsyncc = true"))
    with pytest.raises(bspump.ConfigError) as info:
        await run_app(make_app(path))
    assert info.value.section == "pipeline:Logs:Out" and info.value.key == "fsyncc"
    assert "did you mean 'fsync'" in str(info.value)
    # a third-party processor with ConfigDefaults is strict too
    text = path.read_text().replace("fsyncc = true", "")
    path.write_text(text.replace("lookup = Countries", "lookup = Countries\nlokup = x"))
    with pytest.raises(bspump.ConfigError, match="lokup: unknown key; did you mean 'lookup'"):
        await run_app(make_app(path))


def test_precedence_defaults_file_constructor(tmp_path: Path) -> None:
    path = write_conf(tmp_path, "[pipeline:P:Src]\npath = /from/file.jsonl\nbatch_size = 5\n")
    app = make_app(path)
    pipeline = bspump.Pipeline(app, "P")
    by_default = bspump.FileSource(app, pipeline, id="Src", config={"batch_size": 7})
    assert by_default.Config.get("format") == "json"  # class default
    assert by_default.Config.origin("format") == "default"
    assert by_default.path == "/from/file.jsonl"  # file beats default
    assert by_default.Config.origin("path") == f"{path}:2 [pipeline:P:Src]"
    assert by_default.batch_size == 7  # constructor beats file
    assert by_default.Config.origin("batch_size") == "constructor"
    from_file = bspump.FileSource(app, pipeline, id="Src")
    assert from_file.batch_size == 5
    with pytest.raises(bspump.ConfigError, match="unknown key"):
        bspump.FileSource(app, pipeline, id="Src", config={"bach_size": 1})


def test_check_loads_without_connecting(tmp_path: Path) -> None:
    """A declared connection type is built at assembly but not connected until run."""
    path = write_conf(tmp_path, "[connection:Files]\ntype = core.Nope\n")
    with pytest.raises(bspump.ConfigError, match=r"\[connection:Files\] type: unknown connection type 'core.Nope'"):
        make_app(path)
    assert load_config(path).connections()["Files"]["type"] == "core.Nope"
