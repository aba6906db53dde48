"""The embedded file connectors pass the conformance kit that every connector runs against its system."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import orjson
import pytest

import bspump
from bspump.testing import ConnectorConformance

_names = itertools.count()


class TestFileConformance(ConnectorConformance):
    source_class = bspump.FileSource
    sink_class = bspump.FileSink
    lookup_class = bspump.FileLookup
    timeout = 20.0

    @pytest.fixture(autouse=True)
    def _folder(self, tmp_path: Path) -> None:
        self.folder = tmp_path / "data"
        self.folder.mkdir()

    async def create_target(self) -> Path:
        return self.folder / f"out-{next(_names)}.jsonl"

    def sink_config(self, target: Path) -> dict[str, Any]:
        return {"path": str(target)}

    async def read_target(self, target: Path) -> list[Any]:
        if not target.exists():
            return []
        return [orjson.loads(line) for line in target.read_bytes().splitlines()]

    def bad_event(self) -> Any:
        return {"n": -1, "unwritable": object()}  # not JSON: the sink refuses it for good

    async def create_origin(self) -> Path:
        path = self.folder / f"in-{next(_names)}.jsonl"
        path.touch()
        return path

    def source_config(self, origin: Path) -> dict[str, Any]:
        return {"path": str(origin), "batch_size": self.batch_size, "commit_interval": "20ms"}

    async def feed_origin(self, origin: Path, events: list[Any]) -> None:
        with open(origin, "ab") as handle:
            handle.writelines(orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE) for event in events)
