"""Environment-variable interpolation of configuration values.

Syntax (values only; section names and keys are never interpolated):

``${VAR}``
    The value of ``VAR``; an error if ``VAR`` is not set.
``${VAR:-default}``
    ``default`` when ``VAR`` is unset *or empty* (as in the shell).
``${VAR-default}``
    ``default`` only when ``VAR`` is unset.
``$$``
    A literal ``$``.

A default may be empty and may itself contain references (``${A:-${B}}``); it is only
expanded when used. A ``$`` not followed by ``{`` or ``$`` is kept as is, so values such as
``pa$word`` need no escaping. Error messages name the variable but never a value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from .errors import ConfigError

__all__ = ["interpolate"]

_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _Where:
    """Location of the value being interpolated, for error messages."""

    __slots__ = ("file", "key", "line", "section")

    def __init__(
        self, file: str | None, line: int | None, section: str | None, key: str | None
    ):
        self.file = file
        self.line = line
        self.section = section
        self.key = key

    def error(self, message: str) -> ConfigError:
        return ConfigError(
            message, file=self.file, line=self.line, section=self.section, key=self.key
        )


def interpolate(
    value: str,
    environ: Mapping[str, str],
    *,
    file: str | None = None,
    line: int | None = None,
    section: str | None = None,
    key: str | None = None,
) -> str:
    """Expand ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}`` and ``$$`` in ``value``.

    Raises ConfigError naming ``file:line [section] key`` and the variable when a variable
    without default is unset, or when a reference is malformed.
    """
    return _expand(value, environ, _Where(file, line, section, key))


def _expand(value: str, environ: Mapping[str, str], where: _Where) -> str:
    out: list[str] = []
    i, n = 0, len(value)
    while i < n:
        j = value.find("$", i)
        if j < 0 or j + 1 >= n:
            out.append(value[i:])
            break
        out.append(value[i:j])
        nxt = value[j + 1]
        if nxt == "$":
            out.append("$")
            i = j + 2
        elif nxt == "{":
            end = _closing_brace(value, j + 2)
            if end < 0:
                raise where.error(
                    "unterminated '${' in value (write '$$' for a literal '$')"
                )
            out.append(_reference(value[j + 2 : end], environ, where))
            i = end + 1
        else:
            out.append("$")
            i = j + 1
    return "".join(out)


def _closing_brace(value: str, start: int) -> int:
    """Index of the ``}`` closing a ``${`` whose body starts at ``start``, or -1."""
    depth = 1
    i = start
    while i < len(value):
        c = value[i]
        if c == "$" and value.startswith("$$", i):
            i += 2
            continue
        if c == "$" and value.startswith("${", i):
            depth += 1
            i += 2
            continue
        if c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _reference(body: str, environ: Mapping[str, str], where: _Where) -> str:
    m = _NAME.match(body)
    if m is None:
        raise where.error(
            "invalid variable reference '${...}': expected ${NAME}, ${NAME:-default} "
            "or ${NAME-default}"
        )
    name = m.group()
    rest = body[m.end() :]
    current = environ.get(name)
    if rest == "":
        if current is None:
            raise where.error(
                f"environment variable {name} is not set "
                f"(use ${{{name}:-default}} for a default)"
            )
        return current
    if rest.startswith(":-"):
        return current if current else _expand(rest[2:], environ, where)
    if rest.startswith("-"):
        return current if current is not None else _expand(rest[1:], environ, where)
    raise where.error(
        f"invalid reference to {name}: expected ${{{name}}}, ${{{name}:-default}} "
        f"or ${{{name}-default}}"
    )
