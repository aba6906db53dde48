"""A lookup read from a local file."""

from __future__ import annotations

import asyncio
import csv
import os
from collections.abc import Mapping
from typing import Any, ClassVar, Final

import orjson

from ..config import Choice
from ..errors import BSPumpError
from ..lookup import Lookup
from .checks import check_path, check_readable_input, shown

FORMATS: Final = ("json", "jsonl", "ndjson", "csv")


class FileLookup(Lookup):
    """Loads ``path``: a JSON object (used as is), a JSON array or JSON-lines file of objects, or a
    CSV file with a header; arrays and rows are keyed by the field ``key``. ``format`` is one of ``json``,
    ``jsonl``, ``ndjson``, ``csv``, or ``auto`` (the default), which goes by the file's extension."""

    ConfigDefaults: ClassVar[dict[str, Any]] = {"path": "", "key": "id", "format": Choice("auto", ("auto", *FORMATS))}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.path = check_path(self)
        self.format = self.Config.getchoice("format")

    def preflight(self) -> None:
        """Check that the file exists and is readable and that its format is known; called by ``bspump check``
        and before the application starts."""
        check_readable_input(self, self.path)
        self.file_format()

    def file_format(self) -> str:
        """The format to read: ``format``, or the file's extension when it is ``auto``."""
        if self.format != "auto":
            return self.format
        extension = os.path.splitext(self.path)[1].lstrip(".").lower()
        if extension not in FORMATS:
            raise self.Config.error("format", f"auto cannot tell the format of {shown(self.path)} from its "
                                              f"extension; set format to one of {', '.join(FORMATS)}")
        return extension

    async def load(self) -> Mapping[Any, Any]:
        fmt = self.file_format()
        try:
            return await asyncio.to_thread(_load, self.path, fmt, str(self.Config.get("key")))
        except OSError as exc:
            raise BSPumpError(f"lookup {self.id!r}: cannot read {shown(self.path)}: {exc.strerror}") from None


def _load(path: str, fmt: str, key: str) -> Mapping[Any, Any]:
    if fmt == "csv":
        with open(path, newline="", encoding="utf-8") as handle:
            return _keyed(csv.DictReader(handle), key, path)
    with open(path, "rb") as handle:
        raw = handle.read()
    if fmt in ("jsonl", "ndjson"):
        return _keyed((orjson.loads(line) for line in raw.splitlines() if line.strip()), key, path)
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
