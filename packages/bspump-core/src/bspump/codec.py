"""Encoding helpers shared by connectors."""

from __future__ import annotations

from typing import Any


def json_default(value: Any) -> Any:
    """orjson's ``default=`` for events: bytes as UTF-8 text, sets as sorted lists; anything else is an error."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
