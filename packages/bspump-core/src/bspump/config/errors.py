"""The single exception type of the configuration subsystem."""

from __future__ import annotations

from typing import Final

from ..errors import BSPumpError

__all__ = ["ConfigError", "clip", "shown_value"]

#: Longest value quoted in a message: a 5 MB value must not become a 5 MB error line.
VALUE_LIMIT: Final = 60
#: Longest section name or key quoted in a message (IDs are longer than values, but not unbounded).
NAME_LIMIT: Final = 100


def shown_value(value: object, limit: int = VALUE_LIMIT) -> str:
    """``repr`` of ``value`` for a message, cut to ``limit`` characters (control characters escaped)."""
    if isinstance(value, str) and len(value) > limit:
        value = value[:limit]  # bound the work of repr() on a huge string
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def clip(name: str, limit: int = NAME_LIMIT) -> str:
    """``name`` (a section, key or variable name) made printable and cut to ``limit`` characters."""
    text = name[: limit + 1]
    if not text.isprintable():
        text = repr(text)[1:-1]
    return text if len(text) <= limit and len(name) <= limit else text[: limit - 3] + "..."


class ConfigError(BSPumpError):
    """Raised for bad configuration.

    ``str()`` reads ``file:line [section] key: message`` (parts that are unknown are left out),
    e.g. ``pipelines.conf:12 [connection:PG] port: expected an integer, got 'abc'``.
    Messages never contain the value of a secret key; section names and keys longer than
    :data:`NAME_LIMIT` characters are cut.
    """

    file: str | None
    line: int | None
    section: str | None
    key: str | None
    message: str

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        section: str | None = None,
        key: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.section = section
        self.key = key
        super().__init__(self._format())

    def _format(self) -> str:
        where: list[str] = []
        if self.file is not None:
            where.append(self.file if self.line is None else f"{self.file}:{self.line}")
        if self.section is not None:
            where.append(f"[{clip(self.section)}]")
        prefix = " ".join(where)
        if self.key is not None:
            key = clip(self.key)
            prefix = f"{prefix} {key}" if prefix else key
        return f"{prefix}: {self.message}" if prefix else self.message

    def __str__(self) -> str:
        return self._format()
