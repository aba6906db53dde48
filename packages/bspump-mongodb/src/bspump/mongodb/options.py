"""Reading MongoDB values out of configuration (filters, pipelines, sorts as extended JSON) and keeping BSON
values (resume tokens, ObjectIds) in JSON checkpoints."""

from __future__ import annotations

from typing import Any

from bson import json_util
from bson.json_util import JSONMode, JSONOptions

from bspump.config import ComponentConfig

#: Canonical extended JSON keeps every BSON type (ObjectId, Int64, binary ``_typeBits`` of resume tokens).
_CANONICAL = JSONOptions(json_mode=JSONMode.CANONICAL, tz_aware=True)


def json_value(config: ComponentConfig, key: str, expected: type, example: str) -> Any:
    """``key`` as a MongoDB value: extended JSON text from pipelines.conf, or a Python value given in
    ``config=``; empty gives ``None``. Raises a ConfigError naming the key when it is neither valid JSON nor
    of the ``expected`` type."""
    value = config.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json_util.loads(value, json_options=_CANONICAL)
        except ValueError as exc:
            raise config.error(key, f"not valid (extended) JSON: {exc}; expected e.g. {example}") from None
    if not isinstance(value, expected):
        raise config.error(key, f"expected a JSON {'array' if expected is list else 'object'}, e.g. {example}")
    return value


def sort_spec(config: ComponentConfig, key: str) -> list[tuple[str, int]] | None:
    """``{"field": 1, "other": -1}`` as PyMongo's list of pairs (the order of the keys is kept)."""
    value = json_value(config, key, dict, '{"created": 1}')
    if value is None:
        return None
    pairs = []
    for field, direction in value.items():
        if direction not in (1, -1):
            raise config.error(key, f"direction of {field!r} must be 1 or -1, got {direction!r}")
        pairs.append((str(field), int(direction)))
    return pairs


def dump_bson(value: Any) -> str:
    """A BSON value as canonical extended JSON text, for a JSON checkpoint."""
    return json_util.dumps(value, json_options=_CANONICAL)


def load_bson(text: str) -> Any:
    """The BSON value that :func:`dump_bson` wrote."""
    return json_util.loads(text, json_options=_CANONICAL)
