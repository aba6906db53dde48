"""Effective configuration of one component: class defaults < file section < constructor."""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final, TypeVar

from .coerce import (
    DURATION_TEXT,
    CoercionError,
    coerce,
    expected_type,
    parse_bool,
    parse_seconds,
    split_list,
)
from .errors import ConfigError, shown_value
from .model import Section
from .secrets import is_secret, redact, redact_value
from .typed import Choice, TypedDefault

__all__ = ["RESERVED_KEYS", "ComponentConfig"]

T = TypeVar("T")

#: Keys any section may hold besides the component's own: what to build and which connection it uses.
RESERVED_KEYS: Final = frozenset({"type", "connection"})
"""Keys any section may hold without being declared: ``type = kafka.KafkaConnection``."""

_DEFAULT: Final = "default"
_CONSTRUCTOR: Final = "constructor"
_FILE: Final = "file"


class ComponentConfig(Mapping[str, Any]):
    """Effective config of one component: class defaults < file section < constructor overrides.

    Keys are normalised to lower case (the INI habit); look-ups are case-insensitive.
    File values (strings) and ``str`` overrides are coerced by the type of the default
    (see :func:`bspump.config.coerce.coerce`); other overrides are kept as given, except for
    keys whose default is an :class:`~bspump.config.Int`, :class:`~bspump.config.Float`,
    :class:`~bspump.config.Seconds` or :class:`~bspump.config.Choice`: every value of those,
    typed or not, is checked against the declared range or choices, and stored as a plain
    ``int``, ``float`` or ``str`` (so are the defaults themselves).
    With ``strict`` a key that is not in ``defaults`` (nor in ``RESERVED_KEYS``) is a
    ConfigError with a "did you mean"; without it, such keys are kept as given and listed
    in :attr:`unknown_keys`. ``label`` (e.g. ``"connection:PG"``) names the component in
    messages about defaults and constructor overrides.
    """

    unknown_keys: list[str]

    def __init__(
        self,
        defaults: Mapping[str, Any],
        section: Section | None = None,
        overrides: Mapping[str, Any] | None = None,
        *,
        label: str,
        strict: bool = True,
    ) -> None:
        self._label = label
        self._section = section
        self._defaults: dict[str, Any] = {}
        for key, value in defaults.items():
            k = key.lower()
            if k in self._defaults:
                raise ValueError(
                    f"{label}: defaults declare {k!r} twice (keys are case-insensitive)"
                )
            self._defaults[k] = value
        self._values: dict[str, Any] = {
            k: v.plain() if isinstance(v, TypedDefault) else v for k, v in self._defaults.items()
        }
        self._origins: dict[str, str] = dict.fromkeys(self._defaults, _DEFAULT)
        self.unknown_keys = []
        if section is not None:
            for k, raw in section.items():
                self._set(k, raw, _FILE, strict)
        for key, value in (overrides or {}).items():
            self._set(key.lower(), value, _CONSTRUCTOR, strict)

    def _set(self, key: str, value: Any, origin: str, strict: bool) -> None:
        self._origins[key] = origin
        if key in self._defaults:
            default = self._defaults[key]
            try:
                if isinstance(default, TypedDefault):
                    value = default.check(value)
                elif isinstance(value, str):
                    value = coerce(value, default)
            except CoercionError as e:
                raise self._error(key, _expected_message(key, e.expected, value)) from None
        elif key not in RESERVED_KEYS:
            if strict:
                raise self._error(key, _unknown_key_message(key, list(self._defaults)))
            if key not in self.unknown_keys:
                self.unknown_keys.append(key)
        self._values[key] = value

    # -- Mapping ---------------------------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        return self._values[key.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key`` (case-insensitive), or ``default`` when absent."""
        return self._values.get(key.lower(), default)

    # -- typed getters ---------------------------------------------------------------------------

    def getint(self, key: str, default: int | None = None) -> int:
        """``key`` as int; a string value is parsed. Missing and no default: ConfigError."""
        return int(self._typed(key, default, "an integer", _as_int, lambda s: int(s.strip())))

    def getfloat(self, key: str, default: float | None = None) -> float:
        """``key`` as float; a string value is parsed. Missing and no default: ConfigError."""
        return float(self._typed(key, default, "a number", _as_float, lambda s: float(s.strip())))

    def getboolean(self, key: str, default: bool | None = None) -> bool:
        """``key`` as bool (true/false, yes/no, on/off, 1/0). Missing and no default: ConfigError."""
        return self._typed(key, default, expected_type(True), _as_bool, parse_bool)

    def getlist(self, key: str, default: list[str] | None = None) -> list[str]:
        """``key`` as a list of strings (comma- or newline-separated when a string)."""
        return self._typed(key, default, "a list", _as_list, split_list)

    def getseconds(self, key: str, default: float | None = None) -> float:
        """``key`` as seconds: a number, or a string such as ``1.5``, ``250ms``, ``2s``, ``5m``, ``1h``."""
        return float(self._typed(key, default, DURATION_TEXT, _as_float, parse_seconds))

    def getchoice(self, key: str) -> str:
        """``key`` declared as a :class:`~bspump.config.Choice`: the value, already checked when
        it entered the configuration and spelled as in the choices (``plaintext`` -> ``PLAINTEXT``).

        Raises TypeError if ``key`` is not declared as a Choice (a programming error).
        """
        k = key.lower()
        if not isinstance(self._defaults.get(k), Choice):
            raise TypeError(f"{self._label}: {k!r} is not declared as a Choice in the defaults")
        return str(self._values[k])

    def _typed(
        self,
        key: str,
        default: T | None,
        expected: str,
        accept: Callable[[Any], T | None],
        parse: Callable[[str], T],
    ) -> T:
        k = key.lower()
        value = self._values.get(k)
        if value is None:
            if default is not None:
                return default
            raise self._missing(k)
        if isinstance(value, str):
            try:
                return parse(value)
            except ValueError:
                raise self._error(k, _expected_message(k, expected, value)) from None
        result = accept(value)
        if result is None:
            raise self._error(k, f"expected {expected}, got {type(value).__name__}")
        return result

    # -- origin, redaction -----------------------------------------------------------------------

    def origin(self, key: str) -> str:
        """Where the value of ``key`` comes from: ``"default"``, ``"constructor"`` or
        ``"file:line [section]"``. Raises KeyError for an unknown key."""
        k = key.lower()
        origin = self._origins[k]
        if origin == _FILE and self._section is not None:
            return self._section.location(k)
        return origin

    def getpath(self, key: str, default: str | None = None) -> str:
        """``key`` as a filesystem path; a relative path written in a file is taken relative to that
        file's folder (so a pipelines.conf works from any working directory)."""
        value = str(self._typed(key, default, "a path", _as_str, str))
        k = key.lower()
        section = self._section
        if (
            value
            and self._origins.get(k) == _FILE
            and section is not None
            and section.file
            and not os.path.isabs(value)
        ):
            return os.path.join(os.path.dirname(os.path.abspath(section.file)), value)
        return value

    def redacted(self) -> dict[str, Any]:
        """The effective values with secrets replaced by ``***``."""
        return redact(self._values)

    def __repr__(self) -> str:
        return f"ComponentConfig({self._label!r}, {self.redacted()!r})"

    # -- errors ----------------------------------------------------------------------------------

    def error(self, key: str, message: str) -> ConfigError:
        """A ConfigError about ``key`` located where its value came from (file:line or label)."""
        return self._error(key.lower(), message)

    def _error(self, key: str, message: str) -> ConfigError:
        s = self._section
        origin = self._origins.get(key)
        if s is not None and origin == _FILE:
            return ConfigError(
                message, file=s.file, line=s.line_of(key), section=s.name, key=key
            )
        if s is not None and origin != _CONSTRUCTOR:  # not set in the file: point at its section
            return ConfigError(message, file=s.file, line=s.line, section=s.name, key=key)
        return ConfigError(message, section=self._label, key=key)

    def missing(self, key: str) -> ConfigError:
        """A ConfigError saying that ``key`` must be set, located at the section (file:line) if there is one."""
        return self._missing(key.lower())

    def _missing(self, key: str) -> ConfigError:
        s = self._section
        if s is not None:
            return ConfigError(
                "missing required key",
                file=s.file,
                line=s.line,
                section=s.name,
                key=key,
            )
        return ConfigError("missing required key", section=self._label, key=key)


def _unknown_key_message(key: str, known: list[str]) -> str:
    if not known:
        return "unknown key (this component takes no configuration)"
    names = sorted(known)
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown key{hint} (known keys: {', '.join(names)})"


def _expected_message(key: str, expected: str, value: object) -> str:
    if is_secret(key):
        return f"expected {expected} (value hidden)"
    if isinstance(value, str):
        return f"expected {expected}, got {shown_value(redact_value(value[:1000]))}"
    if isinstance(value, (bool, int, float)) or value is None:
        return f"expected {expected}, got {shown_value(value)}"
    return f"expected {expected}, got {type(value).__name__}"


def _as_str(value: Any) -> str | None:
    return str(value) if isinstance(value, str | os.PathLike) else None


def _as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _as_float(value: Any) -> float | None:
    return (
        float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool)
        else None
    )


def _as_bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _as_list(value: Any) -> list[str] | None:
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else None
