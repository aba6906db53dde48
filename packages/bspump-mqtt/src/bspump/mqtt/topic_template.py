"""TopicTemplate: the topic of a publication, fixed or built from the event (``devices/{device_id}/telemetry``)."""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any


class TopicTemplate:
    """A topic with ``{field}`` placeholders filled from the event's fields (``{{`` and ``}}`` are braces).

    :meth:`render` raises ``KeyError`` when the event lacks a field and ``ValueError`` when a value would
    make an invalid topic (``+``, ``#`` or NUL in it); both are the event's fault.
    """

    __slots__ = ("_parts", "fields", "fixed", "template")

    def __init__(self, template: str) -> None:
        if not template:
            raise ValueError("the topic is empty")
        self.template = template
        parts: list[tuple[str, str | None]] = []
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as exc:
            raise ValueError(f"{template!r} is not a valid template: {exc}") from None
        for literal, field, spec, conversion in parsed:
            if field is not None and (spec or conversion):
                raise ValueError(f"{{{field}}} in {template!r}: format specs and conversions are not supported")
            if field == "":
                raise ValueError(f"{template!r} has an empty placeholder {{}}: name the event's field")
            parts.append((literal, field))
        literal_text = "".join(literal for literal, _ in parts)
        if "+" in literal_text or "#" in literal_text or "\0" in literal_text:
            raise ValueError(f"{template!r}: a topic to publish to has no wildcards (+, #)")
        self._parts = tuple(parts)
        self.fields = tuple(field for _, field in parts if field is not None)
        #: The topic when the template has no placeholders, else ``None``.
        self.fixed: str | None = None if self.fields else literal_text

    def render(self, event: Any) -> str:
        """The topic for ``event`` (a mapping when the template has placeholders)."""
        fixed = self.fixed
        if fixed is not None:
            return fixed
        if not isinstance(event, Mapping):
            raise TypeError(f"topic template {self.template!r} needs an event with fields, "
                            f"not {type(event).__name__}")
        out: list[str] = []
        for literal, field in self._parts:
            out.append(literal)
            if field is not None:
                try:
                    value = str(event[field])
                except KeyError:
                    raise KeyError(f"the event has no field {field!r} for topic template {self.template!r}") \
                        from None
                if "+" in value or "#" in value or "\0" in value:
                    raise ValueError(f"field {field!r} = {value!r} would put a wildcard into the topic")
                out.append(value)
        return "".join(out)
