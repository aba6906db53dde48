"""Turning configuration strings into the type of a declared default."""

from __future__ import annotations

import enum
import pathlib
import re
from typing import Any, Final

from .typed import DURATION_TEXT, CoercionError, Seconds, TypedDefault, parse_seconds

__all__ = [
    "DURATION_TEXT",
    "CoercionError",
    "Seconds",
    "coerce",
    "expected_type",
    "parse_bool",
    "parse_seconds",
    "split_list",
]

_TRUE: Final = frozenset({"true", "yes", "on", "1"})
_FALSE: Final = frozenset({"false", "no", "off", "0"})


def parse_bool(text: str) -> bool:
    """``true/false``, ``yes/no``, ``on/off``, ``1/0`` (case-insensitive)."""
    t = text.strip().lower()
    if t in _TRUE:
        return True
    if t in _FALSE:
        return False
    raise CoercionError(expected_type(True))


def split_list(text: str) -> list[str]:
    """Split on commas and newlines, strip items, drop empty ones."""
    return [item.strip() for item in re.split(r"[,\n]", text) if item.strip()]


def expected_type(default: Any) -> str:
    """Words naming the type a value must have to replace ``default``, for messages."""
    if isinstance(default, TypedDefault):
        return default.describe()
    if isinstance(default, bool):
        return "a boolean (true/false, yes/no, on/off, 1/0)"
    if isinstance(default, enum.Enum):
        return "one of: " + ", ".join(m.name.lower() for m in type(default))
    if isinstance(default, int):
        return "an integer"
    if isinstance(default, float):
        return "a number"
    if isinstance(default, (list, tuple)):
        return "a list"
    return "a string"


def coerce(text: str, default: Any) -> Any:
    """Convert ``text`` to the type of ``default``.

    A :class:`~bspump.config.typed.TypedDefault` (``Int``, ``Float``, ``Seconds``, ``Choice``)
    checks the text itself, range included, and gives a plain value. Otherwise: bool, int, float,
    list, tuple, :class:`enum.Enum` (by name, case-insensitive, or by value),
    :class:`pathlib.PurePath`; ``None``, ``str`` and any other type keep the string.
    Raises CoercionError.
    """
    if isinstance(default, TypedDefault):
        return default.check(text)
    if default is None or isinstance(default, str):
        return text
    if isinstance(default, bool):
        return parse_bool(text)
    if isinstance(default, enum.Enum):
        return _coerce_enum(text, type(default))
    try:
        if isinstance(default, int):
            return int(text.strip())
        if isinstance(default, float):
            return float(text.strip())
    except ValueError:
        raise CoercionError(expected_type(default)) from None
    if isinstance(default, list):
        return split_list(text)
    if isinstance(default, tuple):
        return tuple(split_list(text))
    if isinstance(default, pathlib.PurePath):
        return type(default)(text.strip())
    return text


def _coerce_enum(text: str, cls: type[enum.Enum]) -> enum.Enum:
    t = text.strip()
    for member in cls:
        if member.name.lower() == t.lower() or str(member.value) == t:
            return member
    raise CoercionError("one of: " + ", ".join(m.name.lower() for m in cls))
