"""FileLookup: what preflight can tell before loading, and a file gone at load time as one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_app, write_conf

import bspump


def lookup(tmp_path: Path, body: str) -> bspump.FileLookup:
    app = make_app(write_conf(tmp_path, f"[lookup:Codes]\ntype = core.FileLookup\n{body}"))
    found = app.pump_service.lookups["Codes"]
    assert isinstance(found, bspump.FileLookup)
    return found


def test_preflight_names_a_missing_file_at_its_key(tmp_path: Path) -> None:
    with pytest.raises(bspump.ConfigError) as info:
        lookup(tmp_path, f"path = {tmp_path}/codes.csv\n").preflight()
    assert str(info.value) == (f"{tmp_path}/pipelines.conf:3 [lookup:Codes] path: "
                               f"'{tmp_path}/codes.csv' does not exist")


def test_preflight_needs_a_format_it_can_tell(tmp_path: Path) -> None:
    (tmp_path / "codes.txt").write_text("a,b\n")
    with pytest.raises(bspump.ConfigError, match=r"\[lookup:Codes\] format: auto cannot tell the format"):
        lookup(tmp_path, f"path = {tmp_path}/codes.txt\n").preflight()
    lookup(tmp_path, f"path = {tmp_path}/codes.txt\nformat = csv\n").preflight()  # no error


async def test_a_file_gone_at_load_time_is_one_line(tmp_path: Path) -> None:
    codes = tmp_path / "codes.json"
    codes.write_text('{"cz": "Czechia"}')
    table = lookup(tmp_path, f"path = {codes}\n")
    table.preflight()
    assert await table.load() == {"cz": "Czechia"}
    codes.unlink()
    with pytest.raises(bspump.BSPumpError) as info:
        await table.load()
    assert str(info.value) == f"lookup 'Codes': cannot read '{codes}': No such file or directory"
