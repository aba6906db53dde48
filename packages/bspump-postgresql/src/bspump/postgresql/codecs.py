"""Session set-up for every pooled connection: JSON values as Python objects, in the binary format that
COPY needs."""

from __future__ import annotations

from typing import Any, Final

import asyncpg
import orjson

#: The binary format of jsonb is a version byte, then the JSON text.
_JSONB_VERSION: Final = b"\x01"


def _json_bytes(value: Any) -> bytes:
    # A str is taken as JSON text already (asyncpg's own behaviour without this codec); anything else is encoded.
    if isinstance(value, str):
        return value.encode()
    return orjson.dumps(value)


def _encode_jsonb(value: Any) -> bytes:
    return _JSONB_VERSION + _json_bytes(value)


def _decode_jsonb(data: bytes) -> Any:
    return orjson.loads(data[1:])


async def install_codecs(connection: asyncpg.Connection) -> None:
    """Called by the pool for each new connection: ``json``/``jsonb`` columns take and give Python objects."""
    await connection.set_type_codec("json", schema="pg_catalog", encoder=_json_bytes, decoder=orjson.loads,
                                    format="binary")
    await connection.set_type_codec("jsonb", schema="pg_catalog", encoder=_encode_jsonb, decoder=_decode_jsonb,
                                    format="binary")
