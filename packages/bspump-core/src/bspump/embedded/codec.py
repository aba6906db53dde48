"""Line encoding shared by the file and stdio sinks."""

from __future__ import annotations

import base64
from typing import Any

import orjson

from .. import context as keys
from ..codec import json_default

_DUMP_OPTIONS = orjson.OPT_APPEND_NEWLINE


def encode_line(event: Any, fmt: str, context: dict[str, Any] | None = None) -> bytes:
    """One output line (with its newline); a failed event (``error`` in its context) becomes a dead letter
    (see :func:`dead_letter`), whatever ``fmt``."""
    if context is not None and keys.ERROR in context:
        return orjson.dumps(dead_letter(event, context), default=json_default, option=_DUMP_OPTIONS)
    if fmt == "json":
        return orjson.dumps(event, default=json_default, option=_DUMP_OPTIONS)
    if isinstance(event, bytes):
        return event + b"\n"
    return f"{event}\n".encode()


def dead_letter(event: Any, context: dict[str, Any]) -> dict[str, Any]:
    """The JSON object written for a failed event: the error keys of ``context.DEAD_LETTER_KEYS``, where
    the event came from (``context.POSITION_KEYS``), and ``event``.

    An event of bytes (a line that did not decode) is written as text when it is UTF-8; otherwise
    ``event`` shows it with ``\\xNN`` escapes for the bytes that are not, and ``event_base64`` holds the
    exact bytes.
    """
    letter: dict[str, Any] = {key: context[key] for key in keys.DEAD_LETTER_KEYS if key in context}
    letter.update((key, context[key]) for key in keys.POSITION_KEYS if key in context and key not in letter)
    if isinstance(event, bytes | bytearray):
        raw = bytes(event)
        try:
            letter["event"] = raw.decode("utf-8")
        except UnicodeDecodeError:
            letter["event"] = raw.decode("utf-8", errors="backslashreplace")
            letter["event_base64"] = base64.b64encode(raw).decode("ascii")
    else:
        letter["event"] = event
    return letter
