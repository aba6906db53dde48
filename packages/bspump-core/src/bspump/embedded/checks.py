"""Checks of the embedded connectors' settings: choices, ranges, encodings and paths.

Each check raises a :class:`~bspump.ConfigError` through ``component.Config.error(key, ...)``, so that the
message names ``file:line [section] key``. Paths are never echoed in full: a configuration may hold a
path of megabytes, and a message must stay one short line.
"""

from __future__ import annotations

import codecs
import os
import stat
from typing import Final, Protocol

from ..config import ComponentConfig, ConfigError


class Configured(Protocol):
    """What the checks need of a component or lookup: its effective configuration."""

    Config: ComponentConfig


FORMATS: Final = ("text", "json")

#: How many characters of a path a message shows before cutting it short.
SHOWN_PATH_CHARS: Final = 80


def _limit(name: str, fallback: int) -> int:
    try:
        return int(os.pathconf("/", name))
    except (OSError, ValueError, AttributeError):
        return fallback


#: The longest path and file name the system takes (bytes); Linux: 4096 and 255.
PATH_MAX: Final = _limit("PC_PATH_MAX", 4096)
NAME_MAX: Final = _limit("PC_NAME_MAX", 255)


def shown(path: str) -> str:
    """``path`` quoted for a message, cut to :data:`SHOWN_PATH_CHARS` characters."""
    if len(path) <= SHOWN_PATH_CHARS:
        return repr(path)
    return f"{path[:SHOWN_PATH_CHARS]!r}... ({len(path):,} characters)"


def check_line_encoding(component: Configured, key: str = "encoding") -> str:
    """The codec name of ``key``: a known encoding in which a newline is the single byte 0x0A, since the
    line readers split bytes on it before decoding (UTF-16 and UTF-32 are refused)."""
    name = str(component.Config.get(key)).strip()
    try:
        info = codecs.lookup(name)
    except LookupError:
        raise component.Config.error(key, f"unknown encoding {name[:40]!r}") from None
    try:
        newline = "\n".encode(info.name)
    except (UnicodeError, LookupError):
        newline = b""
    if newline != b"\n":
        raise component.Config.error(key, f"{info.name} cannot be read line by line here: lines are split at the "
                                          "byte 0x0A, which must stand for a newline (utf-8, latin-1, cp1252, ...)")
    return info.name


def path_problem(path: str) -> str | None:
    """What makes ``path`` unusable whatever is on disk (a NUL byte, too long), or ``None``."""
    try:
        encoded = os.fsencode(path)
    except UnicodeError:
        return f"{shown(path)} cannot be encoded for the file system"
    if b"\0" in encoded:
        return f"{shown(path)} contains a NUL byte, which no file name can hold"
    if len(encoded) >= PATH_MAX:
        return f"the path is {len(encoded):,} bytes long; this system takes at most {PATH_MAX - 1:,}"
    longest = max((len(part) for part in encoded.split(b"/")), default=0)
    if longest > NAME_MAX:
        return f"{shown(path)} has a name of {longest:,} bytes; this system takes at most {NAME_MAX} per name"
    return None


def check_path(component: Configured, key: str = "path") -> str:
    """The path of ``key``: required, and usable as a path (see :func:`path_problem`)."""
    path = component.Config.getpath(key, "")
    if not path:
        raise component.Config.missing(key)
    problem = path_problem(path)
    if problem is not None:
        raise component.Config.error(key, problem)
    return path


def stat_error(component: Configured, key: str, path: str, error: OSError) -> ConfigError:
    """A one-line ConfigError for a path that could not be looked at."""
    if isinstance(error, FileNotFoundError):
        return component.Config.error(key, f"{shown(path)} does not exist")
    if isinstance(error, NotADirectoryError):
        return component.Config.error(key, f"{shown(path)}: a folder on the way is a file")
    return component.Config.error(key, f"cannot look at {shown(path)}: {error.strerror}")


def check_readable_input(component: Configured, path: str, key: str = "path") -> os.stat_result:
    """Raise unless ``path`` is a readable file, a FIFO or a device (what the line readers take)."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise stat_error(component, key, path, exc) from None
    mode = info.st_mode
    if stat.S_ISDIR(mode):
        raise component.Config.error(key, f"{shown(path)} is a folder, not a file")
    if stat.S_ISSOCK(mode):
        raise component.Config.error(key, f"{shown(path)} is a socket; files, FIFOs and devices can be read")
    if not os.access(path, os.R_OK):
        raise component.Config.error(key, f"{shown(path)} is not readable (permission denied)")
    return info


def check_writable_output(component: Configured, path: str, key: str = "path") -> None:
    """Raise unless ``path`` can be written: not a folder, and either an existing writable file or a new
    file whose nearest existing folder on the way can take entries (missing folders are created at start)."""
    real = os.path.realpath(path)
    if os.path.isdir(real):
        raise component.Config.error(key, f"{shown(path)} is a folder; give the path of a file in it")
    if os.path.exists(real):
        target, what = real, "the file"
    elif os.path.islink(path):  # a link to a file yet to be created: its folder must exist
        target, what = os.path.dirname(real), "the folder"
        if not os.path.isdir(target):
            raise component.Config.error(key, f"{shown(path)} is a symbolic link into {shown(target)}, which is "
                                              "not a folder")
    else:
        target, what = os.path.dirname(os.path.abspath(path)), "the folder"
        while not os.path.lexists(target):
            target = os.path.dirname(target)
        if not os.path.isdir(target):
            raise component.Config.error(key, f"{shown(target)} is on the way to the file but is not a folder")
    if not os.access(target, os.W_OK):
        try:
            read_only = bool(os.statvfs(target).f_flag & os.ST_RDONLY)
        except OSError:
            read_only = False
        why = "is on a read-only file system" if read_only else "is not writable (permission denied)"
        raise component.Config.error(key, f"{what} {shown(target)} {why}")
