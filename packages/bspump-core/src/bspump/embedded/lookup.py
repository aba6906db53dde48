"""A lookup read from a local file."""

from __future__ import annotations

import asyncio
import csv
from collections.abc import Mapping
from typing import Any, ClassVar

import orjson

from ..lookup import Lookup


class FileLookup(Lookup):
    """Loads ``path``: a JSON object (used as is), a JSON array or JSON-lines file of objects, or a
    CSV file with a header; arrays and rows are keyed by the field ``key``."""

    ConfigDefaults: ClassVar[dict[str, Any]] = {"path": "", "key": "id", "format": "auto"}

    async def load(self) -> Mapping[Any, Any]:
        path = self.Config.getpath("path", "")
        if not path:
            raise self.Config.error("path", "is required: the file to load")
        fmt = str(self.Config.get("format")).lower()
        if fmt == "auto":
            fmt = path.rsplit(".", 1)[-1].lower()
        return await asyncio.to_thread(_load, path, fmt, str(self.Config.get("key")))


def _load(path: str, fmt: str, key: str) -> Mapping[Any, Any]:
    if fmt == "csv":
        with open(path, newline="", encoding="utf-8") as handle:
            return _keyed(csv.DictReader(handle), key, path)
    with open(path, "rb") as handle:
        raw = handle.read()
    if fmt in ("jsonl", "ndjson"):
        return _keyed((orjson.loads(line) for line in raw.splitlines() if line.strip()), key, path)
    if fmt != "json":
        raise ValueError(f"{path}: unknown lookup format {fmt!r} (json, jsonl, csv)")
    data = orjson.loads(raw)
    if isinstance(data, dict):
        return data
    if isinstance(data, list):
        return _keyed(data, key, path)
    raise ValueError(f"{path}: expected a JSON object or array, got {type(data).__name__}")


def _keyed(rows: Any, key: str, path: str) -> dict[Any, Any]:
    result = {}
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict) or key not in row:
            raise ValueError(f"{path}: record {number} has no field {key!r}")
        result[row[key]] = row
    return result
