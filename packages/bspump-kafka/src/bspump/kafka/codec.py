"""How events become Kafka message values and keys."""

from __future__ import annotations

from typing import Any

import orjson

from bspump.codec import json_default


def encode_auto(event: Any) -> bytes | None:
    """``format = auto``: bytes as they are, strings as UTF-8, None as a tombstone, the rest as JSON."""
    kind = type(event)
    if kind is dict:
        return orjson.dumps(event, default=json_default)
    if kind is bytes:
        return event  # type: ignore[no-any-return]
    if kind is str:
        return event.encode()  # type: ignore[no-any-return]
    if event is None:
        return None
    return orjson.dumps(event, default=json_default)


def encode_key(key: Any) -> bytes | None:
    if key is None or type(key) is bytes:
        return key  # type: ignore[no-any-return,unused-ignore]
    if isinstance(key, str):
        return key.encode()
    if isinstance(key, bytearray | memoryview):
        return bytes(key)
    return str(key).encode()


def encode_as(event: Any, fmt: str) -> bytes | None:
    if event is None:
        return None
    if fmt == "json":
        return orjson.dumps(event, default=json_default)
    if fmt == "text":
        return event.encode() if isinstance(event, str) else str(event).encode()
    if isinstance(event, bytes | bytearray | memoryview):
        return bytes(event)
    raise TypeError(f"format = bytes needs bytes events, got {type(event).__name__}")
