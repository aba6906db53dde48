"""Reading ``pipelines.conf``: parse, interpolate, build a :class:`PipelinesConfig`."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from .errors import ConfigError
from .interpolation import interpolate
from .model import PipelinesConfig, Section
from .parser import parse_ini

__all__ = ["load_config", "parse_config"]


def parse_config(
    text: str,
    *,
    filename: str = "<string>",
    environ: Mapping[str, str] | None = None,
    extra_kinds: Iterable[str] = (),
) -> PipelinesConfig:
    """Parse configuration text and interpolate every value from ``environ`` (default: os.environ).

    Fails fast: an unset variable is an error even in a section nothing uses.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    sections: list[Section] = []
    for ps in parse_ini(text, filename=filename, extra_kinds=extra_kinds):
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
    return PipelinesConfig(sections, path=None if filename == "<string>" else filename)


def load_config(
    path: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
    *,
    extra_kinds: Iterable[str] = (),
) -> PipelinesConfig:
    """Read and parse a ``pipelines.conf`` file (UTF-8, an optional BOM is skipped)."""
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8-sig") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError("configuration file not found", file=name) from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"not valid UTF-8 (byte {e.start})", file=name) from None
    except OSError as e:
        raise ConfigError(
            f"cannot read configuration file: {e.strerror}", file=name
        ) from None
    return parse_config(text, filename=name, environ=environ, extra_kinds=extra_kinds)
