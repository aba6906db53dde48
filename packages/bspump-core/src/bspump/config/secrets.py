"""Recognising and hiding secrets: key names, URLs with credentials, libpq-style DSNs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["REDACTED", "is_secret", "redact", "redact_value"]

REDACTED: Final = "***"

_SECRET_NAMES: Final = frozenset(
    {
        "password",
        "passwd",
        "passphrase",
        "secret",
        "token",
        "api_key",
        "apikey",
        "credentials",
        "private_key",
    }
)
_SECRET_SUFFIXES: Final = (
    "_password",
    "_passwd",
    "_passphrase",
    "_secret",
    "_token",
    "_api_key",
    "_apikey",
    "_credentials",
    "_private_key",
)

# scheme://user:password@host  (userinfo may not contain '/', '@' or whitespace)
_URL_USERINFO: Final = re.compile(
    r"(?P<pre>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*):[^@/\s]*@"
)
# password=... in libpq DSNs ("host=h password=x") and query strings ("?password=x&...")
_KV_PASSWORD: Final = re.compile(
    r"(?P<pre>\b(?:password|passwd|pwd)\s*=\s*)(?:'(?:[^'\\]|\\.)*'|[^\s&;]+)",
    re.IGNORECASE,
)


def is_secret(key: str) -> bool:
    """Tell whether a configuration key holds a secret (case-insensitive, ``-`` equals ``_``).

    Secret: ``password``, ``passwd``, ``passphrase``, ``secret``, ``token``, ``api_key``,
    ``apikey``, ``credentials``, ``private_key`` and keys ending in ``_`` + one of these
    (``sasl_plain_password``, ``access_token``...). Not secret: ``key``, ``ssl_keyfile``,
    ``token_field``.
    """
    k = key.strip().lower().replace("-", "_")
    return k in _SECRET_NAMES or k.endswith(_SECRET_SUFFIXES)


def redact_value(value: str) -> str:
    """Hide credentials embedded in a value: ``postgresql://u:p@h/db`` -> ``postgresql://u:***@h/db``.

    Also hides ``password=...`` pairs of libpq DSNs and query strings.
    """
    value = _URL_USERINFO.sub(lambda m: f"{m.group('pre')}:{REDACTED}@", value)
    return _KV_PASSWORD.sub(lambda m: f"{m.group('pre')}{REDACTED}", value)


def _redact_any(key: str, value: Any) -> Any:
    if value is None:
        return None
    if is_secret(key):
        return REDACTED
    if isinstance(value, str):
        return redact_value(value)
    if isinstance(value, Mapping):
        return redact(value)
    if isinstance(value, (list, tuple)):
        items = [redact_value(v) if isinstance(v, str) else v for v in value]
        return items if isinstance(value, list) else tuple(items)
    return value


def redact(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """Copy a mapping with secret values replaced by ``REDACTED`` and URL credentials hidden.

    ``None`` stays ``None`` (an unset secret reveals nothing); nested mappings are redacted too.
    """
    return {str(k): _redact_any(str(k), v) for k, v in mapping.items()}
