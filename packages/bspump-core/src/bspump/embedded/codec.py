"""Line encoding shared by the file and stdio connectors."""

from __future__ import annotations

from typing import Any

import orjson

from ..codec import json_default

FORMATS = ("text", "json")


def encode_line(event: Any, fmt: str, context: dict[str, Any] | None = None) -> bytes:
    """One output line (with newline); failed events (``error`` in context) are wrapped with their error."""
    if context is not None and "error" in context:
        event = {
            "error": context["error"],
            "error_component": context.get("error_component"),
            "event": event if not isinstance(event, bytes) else event.decode("utf-8", errors="replace"),
        }
        return orjson.dumps(event, default=json_default, option=orjson.OPT_APPEND_NEWLINE)
    if fmt == "json":
        return orjson.dumps(event, default=json_default, option=orjson.OPT_APPEND_NEWLINE)
    if isinstance(event, bytes):
        return event + b"\n"
    return f"{event}\n".encode()


def decode_line(line: str, fmt: str) -> Any:
    """One input line without its newline, decoded per ``fmt``."""
    if fmt == "json":
        return orjson.loads(line)
    return line
