"""How an event becomes one action of a bulk request: its index, ``_id``, routing and body lines."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from bspump import context as keys

OP_TYPES: Final = ("index", "create", "update", "upsert", "delete")

#: Context keys that locate one event in its source (``key`` is a message key, not a position; ``source``
#: alone locates no event).
_EVENT_POSITION_KEYS: Final = (keys.OFFSET, keys.LINE, keys.INDEX)
_ID_KEYS: Final = tuple(k for k in keys.POSITION_KEYS if k != keys.KEY)

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


class EncodeError(ValueError):
    """An event that cannot become a bulk action (a field the index or ``_id`` needs is missing...)."""


def position_id(context: Mapping[str, Any]) -> str | None:
    """A document ``_id`` derived from where the source read the event, or None when the context locates no
    single event (no ``offset``, ``line`` or ``index``).

    The id is the hex BLAKE2b-128 digest of the JSON list of ``[key, value]`` pairs of the context's position
    keys, in the order of :data:`bspump.context.POSITION_KEYS` without ``key`` (e.g. ``[["source",
    "KafkaSource"], ["topic", "t"], ["partition", 0], ["offset", 42]]``): the same event read again (a
    replay, a retry after a crash) gets the same id and overwrites itself instead of duplicating.
    """
    if not any(k in context for k in _EVENT_POSITION_KEYS):
        return None
    pairs = [[k, context[k]] for k in _ID_KEYS if k in context]
    try:
        raw = orjson.dumps(pairs, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        raw = repr(pairs).encode()
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


def field_value(event: Any, path: str) -> Any:
    """``event[a][b]`` for ``path`` ``a.b`` (a dotted path; a key holding the dot itself wins)."""
    if not isinstance(event, Mapping):
        raise EncodeError(f"field {path!r} needs a dict event, got {type(event).__name__}")
    if path in event:
        return event[path]
    value: Any = event
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise EncodeError(f"the event has no field {path!r}")
        value = value[part]
    return value


def as_datetime(value: Any) -> dt.datetime:
    """An event's timestamp: a datetime, epoch seconds (or milliseconds, above 1e11), or ISO 8601 text."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, bool):
        raise EncodeError(f"timestamp {value!r} is not a time")
    if isinstance(value, int | float):
        seconds = value / 1000.0 if abs(value) > 1e11 else float(value)
        return dt.datetime.fromtimestamp(seconds, dt.UTC)
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            raise EncodeError(f"timestamp {value!r} is not ISO 8601") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    raise EncodeError(f"timestamp of type {type(value).__name__} is not a time")


class IndexName:
    """An index name, fixed or a template: ``{%Y.%m.%d}`` formats the event's timestamp (UTC) with
    ``strftime``, ``{field}`` inserts a field of the event (dotted paths reach into nested objects), e.g.
    ``logs-{service}-{%Y.%m.%d}``."""

    def __init__(self, template: str, timestamp_field: str, now: Callable[[], dt.datetime] | None = None) -> None:
        self.template = template
        self.timestamp_field = timestamp_field
        self._now = now or (lambda: dt.datetime.now(dt.UTC))
        self.parts: list[tuple[str, str]] = []  # ("text" | "time" | "field", value)
        last = 0
        for match in _PLACEHOLDER.finditer(template):
            if match.start() > last:
                self.parts.append(("text", template[last:match.start()]))
            inner = match.group(1).strip()
            if not inner:
                raise ValueError(f"empty placeholder {{}} in index {template!r}")
            self.parts.append(("time" if inner.startswith("%") else "field", inner))
            last = match.end()
        if last < len(template):
            self.parts.append(("text", template[last:]))
        rest = _PLACEHOLDER.sub("", template)
        if "{" in rest or "}" in rest:
            raise ValueError(f"unbalanced braces in index {template!r}")
        self.fixed: str | None = template if all(kind == "text" for kind, _ in self.parts) else None

    def resolve(self, event: Any) -> str:
        """The index of ``event``."""
        if self.fixed is not None:
            return self.fixed
        out: list[str] = []
        when: dt.datetime | None = None
        for kind, value in self.parts:
            if kind == "text":
                out.append(value)
            elif kind == "field":
                out.append(str(field_value(event, value)))
            else:
                if when is None:
                    when = self._timestamp(event)
                out.append(when.strftime(value))
        return "".join(out).lower()

    def _timestamp(self, event: Any) -> dt.datetime:
        if isinstance(event, Mapping):
            try:
                return as_datetime(field_value(event, self.timestamp_field))
            except EncodeError as exc:
                if "has no field" not in str(exc):
                    raise
        return self._now()  # no timestamp: the time of writing


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """What every action of one sink shares."""

    op_type: str
    index: IndexName
    id_field: str = ""
    id_from_position: bool = True
    routing_field: str = ""
    retry_on_conflict: int = 3


def encode_actions(spec: ActionSpec, events: Sequence[Any], contexts: Sequence[Mapping[str, Any]]) \
        -> list[bytes | EncodeError]:
    """The NDJSON lines (action and, except for ``delete``, the body) of each event, or why it has none.

    Events that share one source position (a processor split one record into several) get ids suffixed
    ``-1``, ``-2``... in batch order, so that they do not overwrite each other and replays stay idempotent.
    """
    out: list[bytes | EncodeError] = []
    seen: dict[str, int] = {}
    fixed_index = spec.index.fixed
    op = "update" if spec.op_type == "upsert" else spec.op_type
    for event, context in zip(events, contexts, strict=True):
        try:
            meta: dict[str, Any] = {}
            if fixed_index is None:
                meta["_index"] = spec.index.resolve(event)
            doc_id: Any = None
            if spec.id_field:
                doc_id = field_value(event, spec.id_field)
            elif spec.id_from_position:
                doc_id = position_id(context)
                if doc_id is not None:
                    repeat = seen.get(doc_id, 0)
                    seen[doc_id] = repeat + 1
                    if repeat:
                        doc_id = f"{doc_id}-{repeat}"
            if doc_id is not None:
                meta["_id"] = str(doc_id)
            elif op in ("update", "delete"):
                raise EncodeError(f"op_type = {spec.op_type} needs an _id: set id_field, or read from a source "
                                  "that gives positions")
            if spec.routing_field:
                meta["routing"] = str(field_value(event, spec.routing_field))
            if op == "update" and spec.retry_on_conflict:
                meta["retry_on_conflict"] = spec.retry_on_conflict
            action = orjson.dumps({op: meta})
            if op == "delete":
                out.append(action + b"\n")
                continue
            body = _document(event)
            if op == "update":
                body = b'{"doc":' + body + (b',"doc_as_upsert":true}' if spec.op_type == "upsert" else b"}")
            out.append(action + b"\n" + body + b"\n")
        except EncodeError as exc:
            out.append(exc)
        except (TypeError, ValueError) as exc:
            out.append(EncodeError(f"the event cannot be encoded as JSON: {exc}"))
    return out


def _document(event: Any) -> bytes:
    """The JSON of ``event``: dicts are encoded, bytes and text are taken as JSON documents already."""
    if isinstance(event, bytes | bytearray | memoryview):
        raw = bytes(event).strip()
    elif isinstance(event, str):
        raw = event.strip().encode()
    else:
        return orjson.dumps(event, option=orjson.OPT_NON_STR_KEYS)
    if b"\n" in raw:
        raw = orjson.dumps(orjson.loads(raw))  # a pretty-printed document: one line, as NDJSON needs
    return raw
