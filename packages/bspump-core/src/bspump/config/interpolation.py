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
expanded when used. References nest at most :data:`MAX_NESTING` deep, whether or not the inner
ones are used (so a file that passes with one environment does not fail with another). A ``$``
not followed by ``{`` or ``$`` is kept as is, so values such as ``pa$word`` need no escaping.
Error messages name the variable but never a value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from .errors import ConfigError, clip

__all__ = ["MAX_NESTING", "interpolate"]

_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: How deep ``${A:-${B:-...}}`` may nest; no real configuration comes close.
MAX_NESTING: Final = 32


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
    without default is unset, when a reference is malformed or nests too deep.
    """
    if "$" not in value:
        return value
    where = _Where(file, line, section, key)
    return _Expansion(value, environ, where).expand(0, len(value))


class _Expansion:
    """One value being expanded. The braces are matched once, up front, so that expanding nested
    defaults never scans the same text twice: the work is linear in the length of the value."""

    __slots__ = ("closing", "environ", "value", "where")

    def __init__(self, value: str, environ: Mapping[str, str], where: _Where) -> None:
        self.value = value
        self.environ = environ
        self.where = where
        self.closing = _match_braces(value, where)

    def expand(self, start: int, end: int) -> str:
        """``value[start:end]`` with its references expanded."""
        value = self.value
        out: list[str] = []
        i = start
        while i < end:
            j = value.find("$", i, end)
            if j < 0 or j + 1 >= end:
                out.append(value[i:end])
                break
            out.append(value[i:j])
            nxt = value[j + 1]
            if nxt == "$":
                out.append("$")
                i = j + 2
            elif nxt == "{":
                close = self.closing.get(j, -1)
                if close < 0:
                    raise self.where.error(
                        "unterminated '${' in value (write '$$' for a literal '$')"
                    )
                out.append(self._reference(j + 2, close))
                i = close + 1
            else:
                out.append("$")
                i = j + 1
        return "".join(out)

    def _reference(self, start: int, end: int) -> str:
        """The expansion of the reference whose body is ``value[start:end]``."""
        value = self.value
        m = _NAME.match(value, start, end)
        if m is None:
            raise self.where.error(
                "invalid variable reference '${...}': expected ${NAME}, ${NAME:-default} "
                "or ${NAME-default}"
            )
        name = m.group()
        rest = m.end()
        current = self.environ.get(name)
        if rest == end:
            if current is None:
                shown = clip(name)
                raise self.where.error(
                    f"environment variable {shown} is not set "
                    f"(use ${{{shown}:-default}} for a default)"
                )
            return current
        if value.startswith(":-", rest, end):
            return current if current else self.expand(rest + 2, end)
        if value.startswith("-", rest, end):
            return current if current is not None else self.expand(rest + 1, end)
        shown = clip(name)
        raise self.where.error(
            f"invalid reference to {shown}: expected ${{{shown}}}, ${{{shown}:-default}} "
            f"or ${{{shown}-default}}"
        )


def _match_braces(value: str, where: _Where) -> dict[int, int]:
    """``{index of '${': index of the '}' closing it}`` for every closed reference in ``value``.

    One pass from one ``$`` or ``}`` to the next. ``$$`` is a literal dollar and a lone ``$`` is
    literal too; a ``}`` outside any reference is literal text. An unclosed ``${`` gets no entry.
    Raises ConfigError when references nest deeper than MAX_NESTING (even in a default that
    would not be used, so that the verdict does not depend on the environment).
    """
    closing: dict[int, int] = {}
    open_at: list[int] = []
    dollar = value.find("$")
    brace = value.find("}")
    while dollar >= 0 or (brace >= 0 and open_at):
        if dollar >= 0 and (brace < 0 or dollar < brace):
            nxt = value[dollar + 1 : dollar + 2]
            if nxt == "{":
                open_at.append(dollar)
                if len(open_at) > MAX_NESTING:
                    raise where.error(
                        f"variable references nested more than {MAX_NESTING} deep"
                    )
            # '${' and '$$' are two characters; a lone '$' is literal and may precede a '}'
            after = dollar + (2 if nxt in ("{", "$") else 1)
            dollar = value.find("$", after)
            if 0 <= brace < after:
                brace = value.find("}", after)
            continue
        if open_at:
            closing[open_at.pop()] = brace
        brace = value.find("}", brace + 1)
    return closing
