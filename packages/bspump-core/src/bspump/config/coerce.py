"""Turning configuration strings into the type of a declared default."""

from __future__ import annotations

import enum
import pathlib
import re
from typing import Any, Final

__all__ = [
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
_DURATION: Final = re.compile(
    r"^(?P<num>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>ms|s|m|h|d)?$", re.IGNORECASE
)
_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DURATION_TEXT: Final = "a duration such as 1.5, 250ms, 2s, 5m or 1h"


class Seconds(float):
    """Marks a default as a duration in seconds: file values may then read ``250ms``, ``5m``..."""

    __slots__ = ()


class CoercionError(ValueError):
    """A string could not be converted; ``expected`` describes the wanted type."""

    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


def parse_bool(text: str) -> bool:
    """``true/false``, ``yes/no``, ``on/off``, ``1/0`` (case-insensitive)."""
    t = text.strip().lower()
    if t in _TRUE:
        return True
    if t in _FALSE:
        return False
    raise CoercionError(expected_type(True))


def parse_seconds(text: str) -> float:
    """``"1.5"``, ``"250ms"``, ``"2s"``, ``"5m"``, ``"1h"``, ``"1d"`` -> seconds as float."""
    m = _DURATION.match(text.strip())
    if m is None:
        raise CoercionError(DURATION_TEXT)
    unit = (m.group("unit") or "s").lower()
    return float(m.group("num")) * _UNIT_SECONDS[unit]


def split_list(text: str) -> list[str]:
    """Split on commas and newlines, strip items, drop empty ones."""
    return [item.strip() for item in re.split(r"[,\n]", text) if item.strip()]


def expected_type(default: Any) -> str:
    """Words naming the type a value must have to replace ``default``, for messages."""
    if isinstance(default, bool):
        return "a boolean (true/false, yes/no, on/off, 1/0)"
    if isinstance(default, Seconds):
        return DURATION_TEXT
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

    bool, int, float, :class:`Seconds`, list, tuple, :class:`enum.Enum` (by name, case-insensitive,
    or by value), :class:`pathlib.PurePath`; ``None``, ``str`` and any other type keep the string.
    Raises CoercionError.
    """
    if default is None or isinstance(default, str):
        return text
    if isinstance(default, bool):
        return parse_bool(text)
    if isinstance(default, Seconds):
        return Seconds(parse_seconds(text))
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
