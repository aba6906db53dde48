"""The single exception type of the configuration subsystem."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(Exception):
    """Raised for bad configuration.

    ``str()`` reads ``file:line [section] key: message`` (parts that are unknown are left out),
    e.g. ``pipelines.conf:12 [connection:PG] port: expected an integer, got 'abc'``.
    Messages never contain the value of a secret key.
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
            where.append(f"[{self.section}]")
        prefix = " ".join(where)
        if self.key is not None:
            prefix = f"{prefix} {self.key}" if prefix else self.key
        return f"{prefix}: {self.message}" if prefix else self.message

    def __str__(self) -> str:
        return self._format()
