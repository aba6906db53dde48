"""The loaded configuration: interpolated sections and the file that holds them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from .secrets import redact

__all__ = ["PipelinesConfig", "Section"]


class Section(Mapping[str, str]):
    """One ``[kind:ID...]`` section after interpolation; keeps its origin for error messages.

    Keys are lower case (look-ups are case-insensitive); values are strings.
    """

    name: str
    kind: str
    ids: tuple[str, ...]
    file: str | None
    line: int | None

    def __init__(
        self,
        name: str,
        values: Mapping[str, str],
        *,
        lines: Mapping[str, int] | None = None,
        file: str | None = None,
        line: int | None = None,
    ) -> None:
        parts = name.split(":")
        self.name = name
        self.kind = parts[0]
        self.ids = tuple(parts[1:])
        self.file = file
        self.line = line
        self._values = {k.lower(): v for k, v in values.items()}
        self._lines = {k.lower(): n for k, n in (lines or {}).items()}

    def __getitem__(self, key: str) -> str:
        return self._values[key.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def line_of(self, key: str) -> int | None:
        """The line on which ``key`` is set, or None if unknown or absent."""
        return self._lines.get(key.lower())

    def location(self, key: str | None = None) -> str:
        """``file:line [name]`` for ``key`` (or the header), for messages."""
        line = self.line if key is None else self.line_of(key)
        if self.file is None:
            return f"[{self.name}]"
        where = self.file if line is None else f"{self.file}:{line}"
        return f"{where} [{self.name}]"

    def redacted(self) -> dict[str, str]:
        """The values with secrets replaced by ``***``."""
        return redact(self._values)

    def __repr__(self) -> str:
        return f"Section({self.name!r}, {self.redacted()!r})"


class PipelinesConfig:
    """All sections of a ``pipelines.conf`` in file order.

    :attr:`warnings` holds one line per doubtful but valid spot of the file (``file:line [section]:
    ...``), for the application or ``bspump check`` to print; values of secrets are never quoted.
    """

    path: str | None
    warnings: list[str]

    def __init__(
        self,
        sections: Iterable[Section] = (),
        path: str | None = None,
        *,
        warnings: Iterable[str] = (),
    ) -> None:
        self.path = path
        self.warnings = list(warnings)
        self._sections: dict[str, Section] = {}
        for s in sections:
            if s.name in self._sections:
                raise ValueError(f"duplicate section {s.name!r}")
            self._sections[s.name] = s

    def section(self, name: str) -> Section | None:
        """The section with this full header (``"pipeline:Events:KafkaSource"``), or None.

        The kind part is case-insensitive; IDs are case-sensitive.
        """
        kind, sep, rest = name.partition(":")
        return self._sections.get(kind.lower() + sep + rest)

    def sections(self) -> list[Section]:
        """All sections in file order."""
        return list(self._sections.values())

    def _by_kind(self, kind: str, n_ids: int) -> dict[str, Section]:
        return {
            s.ids[0]: s
            for s in self._sections.values()
            if s.kind == kind and len(s.ids) == n_ids
        }

    def connections(self) -> dict[str, Section]:
        """``[connection:ID]`` sections by ID, in file order."""
        return self._by_kind("connection", 1)

    def lookups(self) -> dict[str, Section]:
        """``[lookup:ID]`` sections by ID, in file order."""
        return self._by_kind("lookup", 1)

    def pipelines(self) -> dict[str, Section]:
        """``[pipeline:ID]`` sections by ID, in file order (components excluded)."""
        return self._by_kind("pipeline", 1)

    def components(self, pipeline_id: str) -> dict[str, Section]:
        """``[pipeline:ID:ComponentID]`` sections of one pipeline by component ID, in file order."""
        return {
            s.ids[1]: s
            for s in self._sections.values()
            if s.kind == "pipeline" and len(s.ids) == 2 and s.ids[0] == pipeline_id
        }

    def component(self, pipeline_id: str, component_id: str) -> Section | None:
        """The ``[pipeline:ID:ComponentID]`` section, or None."""
        return self._sections.get(f"pipeline:{pipeline_id}:{component_id}")

    def redacted(self) -> dict[str, dict[str, str]]:
        """``{section name: values}`` with secrets replaced, for ``bspump check`` and APIs."""
        return {name: s.redacted() for name, s in self._sections.items()}

    def __repr__(self) -> str:
        return f"PipelinesConfig(path={self.path!r}, sections={list(self._sections)!r})"
