"""Reading ``pipelines.conf``: parse, interpolate, build a :class:`PipelinesConfig`."""

from __future__ import annotations

import codecs
import os
from collections.abc import Iterable, Mapping

from .errors import ConfigError
from .interpolation import interpolate
from .model import PipelinesConfig, Section
from .parser import LINE_BREAK_BYTES, parse_ini

__all__ = ["decode_config", "load_config", "parse_config"]


def parse_config(
    text: str,
    *,
    filename: str = "<string>",
    environ: Mapping[str, str] | None = None,
    extra_kinds: Iterable[str] = (),
) -> PipelinesConfig:
    """Parse configuration text and interpolate every value from ``environ`` (default: os.environ).

    Fails fast: an unset variable is an error even in a section nothing uses. Doubtful lines
    (an indented ``name = value`` continuing the previous value) end up in ``.warnings``.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    sections: list[Section] = []
    warnings: list[str] = []
    for ps in parse_ini(text, filename=filename, extra_kinds=extra_kinds, warnings=warnings):
        values = {
            key: interpolate(
                raw, env, file=filename, line=line, section=ps.name, key=key
            )
            for key, (raw, line) in ps.entries.items()
        }
        lines = {key: line for key, (_, line) in ps.entries.items()}
        sections.append(
            Section(ps.name, values, lines=lines, file=filename, line=ps.line)
        )
    return PipelinesConfig(
        sections, path=None if filename == "<string>" else filename, warnings=warnings
    )


def load_config(
    path: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
    *,
    extra_kinds: Iterable[str] = (),
) -> PipelinesConfig:
    """Read and parse a ``pipelines.conf`` file (UTF-8, an optional BOM is skipped)."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ConfigError("configuration file not found", file=name) from None
    except OSError as e:
        raise ConfigError(
            f"cannot read configuration file: {e.strerror}", file=name
        ) from None
    return parse_config(
        decode_config(data, name), filename=name, environ=environ, extra_kinds=extra_kinds
    )


def decode_config(data: bytes, filename: str) -> str:
    """``data`` decoded as UTF-8 (an optional BOM is skipped).

    Raises ConfigError naming the line, column and byte of the first byte that is not UTF-8.
    """
    skipped = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[skipped:].decode("utf-8")
    except UnicodeDecodeError as e:
        offset = skipped + e.start
        # lines end where the parser ends them: \r\n, \r or \n
        lines = LINE_BREAK_BYTES.split(data[skipped:offset])
        line, column = len(lines), len(lines[-1]) + 1
        raise ConfigError(
            f"not valid UTF-8: byte 0x{data[offset]:02x} at column {column} (byte offset {offset}"
            " in the file); save the file as UTF-8",
            file=filename,
            line=line,
        ) from None
