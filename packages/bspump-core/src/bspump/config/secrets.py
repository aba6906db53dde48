"""Recognising and hiding secrets: key names, URLs with credentials, ``password=`` pairs, and the
configured secret values themselves (:class:`SecretMask`)."""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from .model import PipelinesConfig

__all__ = ["MIN_MASKED_LENGTH", "REDACTED", "SecretMask", "embedded_credentials", "is_secret", "redact", "redact_value"]

REDACTED: Final = "***"

_SECRET_NAMES: Final = frozenset(
    {
        "password",
        "passwd",
        "passphrase",
        "pwd",
        "secret",
        "token",
        "apikey",
        "credentials",
        "authorization",
    }
)
_SECRET_SUFFIXES: Final = (
    "_password",
    "_passwd",
    "_passphrase",
    "_pwd",
    "_secret",
    "_token",
    "_key",  # api_key, access_key, ssl_key, private_key, secret_access_key...
    "_apikey",
    "_credentials",
    "_authorization",
)
# ``secret``, ``secrets``, ``secret_id``, ``secret_access_key``; not ``secretary``
_SECRET_PREFIX: Final = re.compile(r"secrets?(?:_|$)")
# Names ending in ``_key`` that name a field, a context key or an index, not a credential. Their
# values must stay readable and, above all, must not be masked in every log line.
_KEY_NAMES_NOT_SECRET: Final = frozenset(
    {
        "key",
        "routing_key",
        "partition_key",
        "primary_key",
        "foreign_key",
        "sort_key",
        "shard_key",
        "hash_key",
        "range_key",
        "row_key",
        "cache_key",
        "group_key",
        "join_key",
        "lookup_key",
        "dedup_key",
        "deduplication_key",
        "idempotency_key",
        "message_key",
        "record_key",
        "event_key",
    }
)
_KEY_SUFFIXES_NOT_SECRET: Final = ("_context_key",)  # topic_context_key: the name of a context key

# A URL's authority after '://': ends at '/', whitespace, a quote or an angle bracket. Its userinfo
# is everything before the last '@' (so an '@' left unencoded in a password is still hidden).
_AUTHORITY: Final = re.compile(r"[^/\s'\"<>]*")
_SCHEME_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")
# Schemes whose userinfo without a password is a user name (postgresql://postgres@db), not a token as in
# https://TOKEN@host: masking it would hide every occurrence of a common word such as "postgres".
_USER_NAME_SCHEMES: Final = frozenset({
    "postgresql", "postgres", "mongodb", "mongodb+srv", "mysql", "mariadb", "redis", "rediss", "amqp", "amqps",
    "mqtt", "mqtts", "ssh", "sftp", "ftp", "ftps", "kafka", "nats", "tcp", "tls", "ssl",
})
# name=value pairs of libpq DSNs ("host=h password=x") and query strings ("?token=x&..."); the name
# is checked with is_secret(). The look-behind (not \b) keeps the scan linear on 'a-b-c-...'.
_KV_PAIR: Final = re.compile(
    r"(?<![A-Za-z0-9_\-])(?P<key>[A-Za-z_][A-Za-z0-9_\-]*)(?P<sep>\s*=\s*)"
    r"(?P<value>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s&;'\"]+)"
)

#: Secret values shorter than this are not masked by :class:`SecretMask`: replacing every ``ab``
#: or ``123`` would garble each log line (and tell which short strings are secret).
MIN_MASKED_LENGTH: Final = 4


def is_secret(key: str) -> bool:
    """Tell whether a configuration key holds a secret (case-insensitive, ``-`` equals ``_``).

    Secret: ``password``, ``passwd``, ``passphrase``, ``pwd``, ``secret``, ``token``, ``apikey``,
    ``credentials``, ``authorization``; keys ending in ``_`` + one of these (``sasl_plain_password``,
    ``access_token``, ``client_secret``...); keys ending in ``_key`` (``api_key``, ``access_key``,
    ``ssl_key``, ``private_key``); keys starting with ``secret_`` or ``secrets``.
    Not secret: ``key``, ``key_field``, ``ssl_keyfile``, ``token_field``, ``secretary``, keys naming a
    context key (``*_context_key``, e.g. ``topic_context_key``) and well-known field or index names
    ending in ``_key`` (``routing_key``, ``partition_key``, ``primary_key``, ``sort_key``,
    ``shard_key``...).
    """
    k = key.strip().lower().replace("-", "_")
    if k in _SECRET_NAMES or _SECRET_PREFIX.match(k):
        return True
    if not k.endswith(_SECRET_SUFFIXES):
        return False
    return not (k.endswith("_key") and (k in _KEY_NAMES_NOT_SECRET or k.endswith(_KEY_SUFFIXES_NOT_SECRET)))


def _userinfos(text: str) -> Iterator[tuple[int, int, int]]:
    """``(start, colon, end)`` of each URL userinfo in ``text``: ``start:end`` is the userinfo before
    its '@'; ``colon`` is the index of the ':' before a password, or -1. Linear in ``len(text)``."""
    i = text.find("://")
    while i >= 0:
        start = i + 3
        authority = _AUTHORITY.match(text, start)
        end = authority.end() if authority is not None else start
        at = text.rfind("@", start, end)
        if at > start and i > 0 and text[i - 1] in _SCHEME_CHARS:
            colon = text.find(":", start, at)
            if colon >= 0 or _scheme_before(text, i) not in _USER_NAME_SCHEMES:
                yield start, colon, at
        i = text.find("://", max(end, start))


def _scheme_before(text: str, separator: int) -> str:
    """The URL scheme that ends at ``separator`` (the index of its '://'), lower-cased."""
    begin = separator
    while begin > 0 and text[begin - 1] in _SCHEME_CHARS and separator - begin < 32:
        begin -= 1
    return text[begin:separator].lower()


def _redact_urls(text: str) -> str:
    if "://" not in text:
        return text
    out: list[str] = []
    done = 0
    for start, colon, end in _userinfos(text):
        out.append(text[done:start])
        out.append(text[start : colon + 1] + REDACTED if colon >= 0 else REDACTED)
        done = end
    if not out:
        return text
    out.append(text[done:])
    return "".join(out)


def _redact_pair(m: re.Match[str]) -> str:
    if not is_secret(m.group("key")):
        return m.group(0)
    return f"{m.group('key')}{m.group('sep')}{REDACTED}"


def redact_value(value: str) -> str:
    """Hide credentials embedded anywhere in a text (a value, an exception message, a traceback).

    - URL userinfo: ``postgresql://u:p@h/db`` -> ``postgresql://u:***@h/db``;
      ``https://TOKEN@host/x`` -> ``https://***@host/x`` (but ``postgresql://postgres@h/db`` is left
      alone: for database and broker schemes a userinfo without password is a user name);
    - ``name=value`` pairs whose name is a secret (:func:`is_secret`), as in libpq DSNs
      (``host=h password=x``) and query strings (``?access_token=x&y=1``).
    """
    value = _redact_urls(value)
    if "=" not in value:
        return value
    return _KV_PAIR.sub(_redact_pair, value)


def embedded_credentials(text: str) -> list[str]:
    """The secret parts of credentials written inside ``text``: the password of each URL userinfo
    (or the whole userinfo when it has no password: a token), also percent-decoded, and the value of
    each secret ``name=value`` pair. The user names are not secret and are left out."""
    found: list[str] = []
    for start, colon, end in _userinfos(text):
        secret = text[colon + 1 : end] if colon >= 0 else text[start:end]
        found.append(secret)
        decoded = urllib.parse.unquote(secret)
        if decoded != secret:
            found.append(decoded)
    if "=" in text:
        for m in _KV_PAIR.finditer(text):
            if is_secret(m.group("key")):
                value = m.group("value")
                found.append(value[1:-1] if value[:1] in "'\"" and len(value) > 1 else value)
    return [s for s in found if s]


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


_HEX_ESCAPE: Final = re.compile(r"%[0-9A-F]{2}")


def _spellings(value: str) -> set[str]:
    """``value`` as it may appear in a text: as is, percent-encoded (upper- and lower-case hex, with
    ``+`` for spaces), JSON-escaped and ``repr``-escaped."""
    forms = {value, json.dumps(value)[1:-1], repr(value)[1:-1]}
    for encoded in (urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value, safe="")):
        forms.add(encoded)
        forms.add(_HEX_ESCAPE.sub(lambda m: m.group().lower(), encoded))
    return forms


class SecretMask:
    """Hides configured secret values wherever they appear in a text: log lines, error messages,
    ``bspump check`` output, ``/metrics``.

    Pattern-based redaction (:func:`redact_value`) only finds secrets in known shapes; a library's
    ``ConnectionError("login rejected for user 'u' with password 'hunter2'")`` needs the values
    themselves. Build one with :meth:`from_config`, add what constructors receive in code with
    :meth:`add_mapping`, and pass every outgoing text through :meth:`mask`.

    Values shorter than :data:`MIN_MASKED_LENGTH` characters are not masked (they would garble every
    log line); :attr:`too_short` tells where they were configured, so that the application can warn.
    """

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._too_short: dict[str, None] = {}  # an ordered set of sources
        self._pattern: re.Pattern[str] | None = None
        self._compiled = True

    @classmethod
    def from_config(cls, config: PipelinesConfig) -> SecretMask:
        """A mask holding every value of a secret key (:func:`is_secret`) in every section of
        ``config``, and the credentials embedded in URL-like values of any key
        (``dsn = postgresql://u:pw@h/db`` gives ``pw``)."""
        mask = cls()
        for section in config.sections():
            for key, value in section.items():
                mask._add_entry(key, value, f"{section.location(key)} {key}")
        return mask

    def add(self, value: object, source: str = "a secret") -> None:
        """Mask ``value`` from now on (a string, bytes or a number; ``None`` and blanks are ignored).

        ``source`` says where the value was configured, for :attr:`too_short`. A multi-line value (a
        PEM key) is also masked line by line.
        """
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            return
        if len(value) < MIN_MASKED_LENGTH:
            self._too_short[source] = None
            return
        candidates = {value}
        if "\n" in value:
            candidates.update(line.strip() for line in value.splitlines())
        for candidate in candidates:
            if len(candidate) >= MIN_MASKED_LENGTH and candidate not in self._values:
                self._values.add(candidate)
                self._compiled = False

    def add_mapping(self, mapping: Mapping[str, Any], source: str = "config") -> None:
        """Mask the values of the secret keys of ``mapping`` (everything below a secret key, nested
        or listed) and the credentials embedded in string values of any key (nested mappings and
        lists included): for a ``config=`` a component received in code. ``source`` labels the
        mapping in :attr:`too_short`."""
        for key, value in mapping.items():
            self._add_entry(str(key), value, f"{source} {key}")

    def _add_entry(self, key: str, value: Any, source: str) -> None:
        if is_secret(key):
            self._add_tree(value, source)
        elif isinstance(value, str):
            for secret in embedded_credentials(value):
                self.add(secret, source)
        elif isinstance(value, Mapping):
            self.add_mapping(value, source)
        elif isinstance(value, (list, tuple)):
            for item in value:
                self._add_entry(key, item, source)

    def _add_tree(self, value: Any, source: str) -> None:
        if isinstance(value, Mapping):
            for item in value.values():
                self._add_tree(item, source)
        elif isinstance(value, (list, tuple, set, frozenset)):
            for item in value:
                self._add_tree(item, source)
        else:
            self.add(value, source)
            if isinstance(value, str):  # a secret DSN: its password may also appear alone
                for secret in embedded_credentials(value):
                    self.add(secret, source)

    @property
    def too_short(self) -> tuple[str, ...]:
        """Where each secret too short to be masked was configured (``pipelines.conf:4
        [connection:PG] password``), never the value itself."""
        return tuple(self._too_short)

    def mask(self, text: str) -> str:
        """``text`` with every configured secret value (and its encoded forms) replaced by ``***``,
        longest first, then credentials in known shapes hidden (:func:`redact_value`)."""
        if not self._compiled:
            self._compile()
        if self._pattern is not None:
            text = self._pattern.sub(REDACTED, text)
        return redact_value(text)

    def _compile(self) -> None:
        forms: set[str] = set()
        for value in self._values:
            forms.update(_spellings(value))
        # longest first: a secret that contains another one is hidden whole
        ordered = sorted(forms, key=lambda f: (-len(f), f))
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        self._compiled = True

    def __repr__(self) -> str:
        return f"<SecretMask of {len(self._values)} values>"
