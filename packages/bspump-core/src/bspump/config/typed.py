"""Defaults that carry their own range or choices: :class:`Int`, :class:`Float`, :class:`Seconds`,
:class:`Choice`.

A component declares them in ``ConfigDefaults``::

    ConfigDefaults = {
        "batch_size": Int(1000, min=1, max=100_000),
        "ratio": Float(0.5, min=0.0, max=1.0),
        "reconnect_initial": Seconds(0.5, min=0.01),
        "format": Choice("json", ("text", "json"), aliases={"utf-8": "text"}),
    }

:class:`~bspump.config.ComponentConfig` checks every value that replaces one of them, whether it
comes from pipelines.conf or from the constructor's ``config=``, and stores a plain ``int``,
``float`` or ``str``. Each marker still is the number or string it wraps, so code that reads the
defaults directly keeps working; arithmetic on it gives plain numbers.
"""

from __future__ import annotations

import abc
import datetime
import enum
import math
import re
import types
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Final, Self

__all__ = [
    "DURATION_TEXT",
    "Choice",
    "CoercionError",
    "Float",
    "Int",
    "Seconds",
    "TypedDefault",
    "format_seconds",
    "parse_seconds",
    "unbounded_numeric_keys",
]

DURATION_TEXT: Final = "a duration such as 1.5, 250ms, 2s, 5m or 1h"
_DURATION: Final = re.compile(
    r"^(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?P<unit>ms|s|m|h|d)?$", re.IGNORECASE
)
_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# ASCII digits only: int() would also take '٣' or '1_000', which no one means in a config file.
_INTEGER: Final = re.compile(r"[+-]?[0-9]+")


class CoercionError(ValueError):
    """A value could not be converted or is out of range; ``expected`` describes what is wanted."""

    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


def parse_seconds(text: str) -> float:
    """``"1.5"``, ``"250ms"``, ``"2s"``, ``"5m"``, ``"1h"``, ``"1d"`` -> seconds as float."""
    m = _DURATION.match(text.strip())
    if m is None:
        raise CoercionError(DURATION_TEXT)
    unit = (m.group("unit") or "s").lower()
    return float(m.group("num")) * _UNIT_SECONDS[unit]


def format_seconds(seconds: float) -> str:
    """A duration the way a person writes it in pipelines.conf: ``10ms``, ``1.5s``, ``5m``, ``1h``."""
    if seconds == 0:
        return "0s"
    for unit in ("d", "h", "m"):
        size = _UNIT_SECONDS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{_number(seconds / size)}{unit}"
    if seconds >= 1:
        return f"{_number(seconds)}s"
    # round away binary noise: 0.01 * 1000 is 10.000000000000002
    return f"{_number(round(seconds * 1000, 6))}ms"


def _number(value: float) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(int(value)) if isinstance(value, int) else repr(float(value))


class TypedDefault(abc.ABC):
    """A default that knows which values may replace it.

    :class:`~bspump.config.ComponentConfig` calls :meth:`check` on each file value (a string) and
    each constructor override (a string or an already typed value) of the key it is the default of.
    """

    __slots__ = ()

    @abc.abstractmethod
    def describe(self) -> str:
        """Words naming the accepted values, for messages: ``an integer from 1 to 100``."""

    @abc.abstractmethod
    def check(self, value: object) -> Any:
        """``value`` converted to the plain type of this default; raises :class:`CoercionError`
        (with the words of :meth:`describe` or of the range that was missed)."""

    @abc.abstractmethod
    def plain(self) -> Any:
        """This default as a plain ``int``, ``float`` or ``str``."""

    @property
    def has_range(self) -> bool:
        """True if values are limited (bounds or choices); plain numbers have no range."""
        return True


def _check_bounds(default: float, lo: float | None, hi: float | None) -> None:
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"min ({lo}) is greater than max ({hi})")
    if (lo is not None and default < lo) or (hi is not None and default > hi):
        raise ValueError(f"the default {default} is outside its own range [{lo}, {hi}]")


def _range_words(noun: str, lo: str | None, hi: str | None) -> str:
    if lo is not None and hi is not None:
        return f"{noun} from {lo} to {hi}"
    if lo is not None:
        return f"{noun} of at least {lo}"
    if hi is not None:
        return f"{noun} of at most {hi}"
    return noun


class Int(int, TypedDefault):
    """An integer default, optionally limited to ``min <= value <= max``.

    A file value must be written as an integer (``1.5`` or ``1e3`` are refused); an override may be
    an ``int`` or such a string. ``Int(1000, min=1)`` reads ``an integer of at least 1`` in messages.
    """

    _min: int | None
    _max: int | None

    def __new__(cls, default: int, *, min: int | None = None, max: int | None = None) -> Self:
        for bound in (default, min, max):
            if bound is not None and (not isinstance(bound, int) or isinstance(bound, bool)):
                raise TypeError(f"Int() takes integers, got {bound!r}")
        _check_bounds(default, min, max)
        self = super().__new__(cls, default)
        self._min = None if min is None else int(min)
        self._max = None if max is None else int(max)
        return self

    def __getnewargs_ex__(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (int(self),), {"min": self._min, "max": self._max}

    @property
    def min(self) -> int | None:
        """The smallest accepted value, or None."""
        return self._min

    @property
    def max(self) -> int | None:
        """The largest accepted value, or None."""
        return self._max

    @property
    def has_range(self) -> bool:
        return self._min is not None or self._max is not None

    def describe(self) -> str:
        lo = None if self._min is None else str(self._min)
        hi = None if self._max is None else str(self._max)
        return _range_words("an integer", lo, hi)

    def check(self, value: object) -> int:
        if isinstance(value, str):
            text = value.strip()
            if _INTEGER.fullmatch(text) is None:
                raise CoercionError(self.describe())
            try:
                number = int(text)
            except ValueError:  # more digits than int() converts (sys.get_int_max_str_digits)
                raise CoercionError(self.describe()) from None
        elif isinstance(value, int) and not isinstance(value, bool):
            number = int(value)
        else:
            raise CoercionError(self.describe())
        if (self._min is not None and number < self._min) or (self._max is not None and number > self._max):
            raise CoercionError(self.describe())
        return number

    def plain(self) -> int:
        return int(self)


class Float(float, TypedDefault):
    """A number default, optionally limited to ``min <= value <= max``; infinities and NaN are refused.

    A file value may be written as an integer or a decimal (``3``, ``0.25``, ``1e-3``).
    """

    __slots__ = ("_max", "_min")

    _min: float | None
    _max: float | None
    _noun: ClassVar[str] = "a number"

    def __new__(cls, default: float, *, min: float | None = None, max: float | None = None) -> Self:
        for bound in (default, min, max):
            if bound is not None and (not isinstance(bound, (int, float)) or isinstance(bound, bool)):
                raise TypeError(f"{cls.__name__}() takes numbers, got {bound!r}")
        _check_bounds(default, min, max)
        self = super().__new__(cls, default)
        self._min = None if min is None else float(min)
        self._max = None if max is None else float(max)
        return self

    def __getnewargs_ex__(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (float(self),), {"min": self._min, "max": self._max}

    @property
    def min(self) -> float | None:
        """The smallest accepted value, or None."""
        return self._min

    @property
    def max(self) -> float | None:
        """The largest accepted value, or None."""
        return self._max

    @property
    def has_range(self) -> bool:
        return self._min is not None or self._max is not None

    def _bound_text(self, bound: float | None) -> str | None:
        return None if bound is None else _number(bound)

    def range_text(self) -> str:
        """Words naming the range alone (``a number from 0 to 1``), for a value out of range."""
        return _range_words(self._noun, self._bound_text(self._min), self._bound_text(self._max))

    def describe(self) -> str:
        return self.range_text()

    def _parse(self, text: str) -> float:
        try:
            return float(text.strip())
        except ValueError:
            raise CoercionError(self.describe()) from None

    def check(self, value: object) -> float:
        if isinstance(value, str):
            number = self._parse(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an int too large for a float
                raise CoercionError(self.describe()) from None
        else:
            raise CoercionError(self.describe())
        if not math.isfinite(number):
            raise CoercionError(self.describe())
        if (self._min is not None and number < self._min) or (self._max is not None and number > self._max):
            raise CoercionError(self.range_text())
        return number

    def plain(self) -> float:
        return float(self)


class Seconds(Float):
    """A duration default in seconds; values may read ``1.5``, ``250ms``, ``2s``, ``5m``, ``1h``, ``1d``.

    ``min`` defaults to 0 (a duration is never negative). ``Seconds(0.5, min=0.01)`` reads
    ``a duration of at least 10ms`` in messages. An override may also be a number of seconds or a
    :class:`datetime.timedelta`.
    """

    __slots__ = ()
    _noun = "a duration"

    def __new__(cls, default: float, *, min: float | None = 0.0, max: float | None = None) -> Self:
        return super().__new__(cls, default, min=min, max=max)

    def _bound_text(self, bound: float | None) -> str | None:
        return None if bound is None else format_seconds(bound)

    def range_text(self) -> str:
        if self._min == 0 and self._max is None:
            return "a non-negative duration"
        return super().range_text()

    def describe(self) -> str:
        if (self._min is None or self._min == 0) and self._max is None:
            return DURATION_TEXT
        return f"{super().range_text()} (written like 1.5, 250ms, 2s, 5m or 1h)"

    def _parse(self, text: str) -> float:
        try:
            return parse_seconds(text)
        except CoercionError:
            raise CoercionError(self.describe()) from None

    def check(self, value: object) -> float:
        if isinstance(value, datetime.timedelta):
            value = value.total_seconds()
        return super().check(value)


class Choice(str, TypedDefault):
    """A string default limited to ``choices``, matched case-insensitively.

    The configuration stores the spelling used in ``choices`` (choices ``("PLAINTEXT", "SSL")``:
    ``plaintext`` gives ``"PLAINTEXT"``). ``aliases`` maps other spellings to a choice
    (``{"utf-8": "text"}``). An empty default means "not set": an empty value is then accepted too.
    """

    _choices: tuple[str, ...]
    _lookup: dict[str, str]
    _aliases: dict[str, str]

    def __new__(cls, default: str, choices: Iterable[str], *, aliases: Mapping[str, str] | None = None) -> Self:
        if not isinstance(default, str):
            raise TypeError(f"Choice() takes a string default, got {default!r}")
        options = tuple(choices)
        if not options:
            raise ValueError("Choice() needs at least one choice")
        lookup: dict[str, str] = {}
        for choice in options:
            if not isinstance(choice, str) or not choice.strip():
                raise TypeError(f"choices must be non-empty strings, got {choice!r}")
            if choice.lower() in lookup:
                raise ValueError(f"choice {choice!r} is listed twice (choices are case-insensitive)")
            lookup[choice.lower()] = choice
        spelled = dict(aliases or {})
        for alias, target in spelled.items():
            canonical = lookup.get(str(target).lower())
            if canonical is None:
                raise ValueError(f"alias {alias!r} maps to {target!r}, which is not one of {options}")
            if lookup.setdefault(alias.strip().lower(), canonical) != canonical:
                raise ValueError(f"alias {alias!r} is also a choice of its own")
        if default.strip() == "":
            value = ""
        elif default.strip().lower() in lookup:
            value = lookup[default.strip().lower()]
        else:
            raise ValueError(f"the default {default!r} is not one of {options}")
        self = super().__new__(cls, value)
        self._choices = options
        self._lookup = lookup
        self._aliases = spelled
        return self

    def __getnewargs_ex__(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (str(self), self._choices), {"aliases": self._aliases}

    @property
    def choices(self) -> tuple[str, ...]:
        """The accepted values, spelled as stored."""
        return self._choices

    @property
    def aliases(self) -> Mapping[str, str]:
        """Other spellings and the choice each stands for."""
        return types.MappingProxyType(self._aliases)

    def describe(self) -> str:
        return "one of " + ", ".join(self._choices)

    def check(self, value: object) -> str:
        if not isinstance(value, str):
            raise CoercionError(self.describe())
        text = value.strip()
        if text == "" and str(self) == "":
            return ""
        canonical = self._lookup.get(text.lower())
        if canonical is None:
            raise CoercionError(self.describe())
        return canonical

    def plain(self) -> str:
        return str(self)


def unbounded_numeric_keys(defaults: Mapping[str, Any]) -> list[str]:
    """Keys whose default is a number that declares no range (a plain ``int``/``float``, or an
    :class:`Int`/:class:`Float` without ``min`` and ``max``), in declaration order.

    Booleans and enums are not numbers here. The conformance kit asks each connector to declare
    ranges for these.
    """
    return [
        key
        for key, value in defaults.items()
        if isinstance(value, (int, float))
        and not isinstance(value, (bool, enum.Enum))
        and not (isinstance(value, TypedDefault) and value.has_range)
    ]
