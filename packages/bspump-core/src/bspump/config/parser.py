"""A small INI parser that keeps the line number of every section and key.

Format (a strict subset of what :mod:`configparser` accepts):

- ``[kind]``, ``[kind:ID]`` or ``[kind:ID:ComponentID]`` headers; the kind is case-insensitive
  and must be known, IDs are case-sensitive and stripped of surrounding blanks.
- ``key = value`` or ``key: value`` (the first ``=`` or ``:`` separates); keys are normalised to
  lower case, values are stripped.
- Indented lines following a key continue its value and are joined with a newline. An
  indented line that reads like ``name = value`` still continues the value (a multi-line DSN or
  query may hold one), but is reported in the warnings: it is more often a key indented by
  mistake than a continuation.
- Lines end at ``\r\n``, ``\r`` or ``\n`` (as in editors; a form feed or ``\u2028`` does not
  end a line, so reported line numbers match what an editor shows).
- Whole-line comments start with ``#`` or ``;``. There are no inline comments: ``#`` inside a
  value is kept (passwords and URL fragments may contain it). Blank lines are ignored.
- Duplicate sections and duplicate keys within a section are errors.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from .errors import ConfigError, clip
from .secrets import REDACTED, is_secret, redact_value

__all__ = ["KNOWN_KINDS", "LINE_BREAK", "LINE_BREAK_BYTES", "ParsedSection", "parse_ini"]

LINE_BREAK: Final = re.compile(r"\r\n|\r|\n")
LINE_BREAK_BYTES: Final = re.compile(rb"\r\n|\r|\n")
# an indented line that a reader would take for a key of its own: 'batch_size = 5'
_LOOKS_LIKE_KEY: Final = re.compile(r"(?P<key>[A-Za-z_][A-Za-z0-9_.\-]*)\s*=(?!=)\s*(?P<value>.*)")

# kind -> (min number of IDs, max number of IDs)
_ID_COUNTS: Final[dict[str, tuple[int, int]]] = {
    "connection": (1, 1),
    "lookup": (1, 1),
    "pipeline": (1, 2),
    "web": (0, 1),
    "general": (0, 1),
    "logging": (0, 1),
    "metrics": (0, 1),
}
KNOWN_KINDS: Final = frozenset(_ID_COUNTS)

_HEADER: Final = re.compile(r"^\[(?P<name>[^\]]*)\]\s*(?:[#;].*)?$")
_EXAMPLE_IDS: Final = {
    "connection": "[connection:ID]",
    "lookup": "[lookup:ID]",
    "pipeline": "[pipeline:ID] or [pipeline:ID:ComponentID]",
}


@dataclass
class ParsedSection:
    """A section as written: normalised name, kind, IDs, header line and ``key -> (value, line)``."""

    name: str
    kind: str
    ids: tuple[str, ...]
    line: int
    entries: dict[str, tuple[str, int]] = field(default_factory=dict)


def _parse_header(
    raw: str, filename: str, lineno: int, kinds: dict[str, tuple[int, int]]
) -> tuple[str, tuple[str, ...]]:
    parts = [p.strip() for p in raw.split(":")]
    kind = parts[0].lower()
    ids = tuple(parts[1:])
    if not kind:
        raise ConfigError(
            "empty section kind in header", file=filename, line=lineno, section=raw
        )
    if kind not in kinds:
        known = sorted(kinds)
        close = difflib.get_close_matches(kind, known, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(
            f"unknown section kind '{clip(parts[0])}'; {hint}(known kinds: {', '.join(known)})",
            file=filename,
            line=lineno,
            section=raw,
        )
    if any(not i for i in ids):
        raise ConfigError(
            "empty ID in section header" + _expected(kind, kinds),
            file=filename,
            line=lineno,
            section=raw,
        )
    lo, hi = kinds[kind]
    if not lo <= len(ids) <= hi:
        raise ConfigError(
            f"wrong number of IDs for a '{kind}' section" + _expected(kind, kinds),
            file=filename,
            line=lineno,
            section=raw,
        )
    return kind, ids


def _expected(kind: str, kinds: dict[str, tuple[int, int]]) -> str:
    if kind in _EXAMPLE_IDS:
        return f"; expected {_EXAMPLE_IDS[kind]}"
    hi = kinds.get(kind, (0, 0))[1]
    return f"; expected [{kind}]" + (f" or [{kind}:ID]" if hi >= 1 else "")


def parse_ini(
    text: str,
    *,
    filename: str = "<string>",
    extra_kinds: Iterable[str] = (),
    warnings: list[str] | None = None,
) -> list[ParsedSection]:
    """Parse INI text into sections in file order, keeping line numbers (1-based).

    ``extra_kinds`` admits further section kinds (with zero or more IDs), e.g. for plugins.
    Raises ConfigError naming the file and line on any syntax error. Doubtful but valid lines
    (an indented ``name = value``) are described in ``warnings`` when a list is given.
    """
    kinds = dict(_ID_COUNTS)
    for k in extra_kinds:
        kinds.setdefault(k.lower(), (0, 8))
    sections: list[ParsedSection] = []
    seen: dict[str, int] = {}
    current: ParsedSection | None = None
    last_key: str | None = None  # key whose value an indented line would continue
    # (section index, key) -> lines of a continued value, joined once at the end (joining as they
    # come would copy the value again for every line)
    continued: dict[tuple[int, str], list[str]] = {}

    for lineno, line in enumerate(LINE_BREAK.split(text), start=1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        if line[0] in " \t" and current is not None and last_key is not None:
            value, key_line = current.entries[last_key]
            if warnings is not None:
                doubt = _indented_key(stripped, last_key, key_line)
                if doubt:
                    warnings.append(f"{filename}:{lineno} [{clip(current.name)}]: {doubt}")
            parts = continued.setdefault((len(sections) - 1, last_key), [value] if value else [])
            parts.append(stripped)
            continue
        if stripped.startswith("["):
            m = _HEADER.match(stripped)
            if m is None:
                raise ConfigError(
                    "malformed section header", file=filename, line=lineno
                )
            kind, ids = _parse_header(m.group("name").strip(), filename, lineno, kinds)
            name = ":".join((kind, *ids))
            if name in seen:
                raise ConfigError(
                    f"duplicate section (first defined on line {seen[name]})",
                    file=filename,
                    line=lineno,
                    section=name,
                )
            seen[name] = lineno
            current = ParsedSection(name, kind, ids, lineno)
            sections.append(current)
            last_key = None
            continue
        if current is None:
            raise ConfigError(
                "key outside of any section (add a [kind:ID] header above it)",
                file=filename,
                line=lineno,
            )
        cut = min(
            (p for p in (stripped.find("="), stripped.find(":")) if p >= 0), default=-1
        )
        if cut < 0:
            raise ConfigError(
                "expected 'key = value'",
                file=filename,
                line=lineno,
                section=current.name,
            )
        key = stripped[:cut].strip().lower()
        if not key:
            raise ConfigError(
                "empty key before the separator",
                file=filename,
                line=lineno,
                section=current.name,
            )
        if key in current.entries:
            raise ConfigError(
                f"duplicate key (first set on line {current.entries[key][1]})",
                file=filename,
                line=lineno,
                section=current.name,
                key=key,
            )
        current.entries[key] = (stripped[cut + 1 :].strip(), lineno)
        last_key = key
    for (index, key), parts in continued.items():
        entries = sections[index].entries
        entries[key] = ("\n".join(parts), entries[key][1])
    return sections


def _indented_key(line: str, continued_key: str, key_line: int) -> str | None:
    """The warning for an indented continuation line that reads like a key of its own, or None."""
    m = _LOOKS_LIKE_KEY.fullmatch(line)
    if m is None:
        return None
    if is_secret(continued_key):  # the line may be part of the secret: do not quote it
        what = "an indented line that reads like 'name = value'"
    else:
        name = m.group("key")
        value = REDACTED if is_secret(name) else redact_value(m.group("value")[:200])
        shown = f"{name} = {value}"
        what = f"indented '{clip(shown if len(shown) <= 60 else shown[:57] + '...')}'"
    return (
        f"{what} continues the value of '{clip(continued_key)}' (line {key_line}); "
        "remove the indentation if it is a key of its own"
    )
