"""Secret detection and redaction."""

from __future__ import annotations

import re
import urllib.parse

import pytest

from bspump.config import REDACTED, SecretMask, is_secret, parse_config, redact, redact_value
from bspump.config.secrets import MIN_MASKED_LENGTH


@pytest.mark.parametrize(
    "key",
    [
        "password", "PASSWORD", "passwd", "secret", "token", "api_key", "apikey", "api-key",
        "credentials", "private_key", "sasl_plain_password", "ssl_password", "client_secret",
        "access_token", "ssl_key_passwd", "openai_api_key", "x_apikey", "passphrase",
        # secret*, *_key, authorization, pwd, credentials
        "secret_key", "secret_access_key", "secrets", "secret-id", "access_key", "ssl_key", "aws_secret_access_key",
        "authorization", "proxy_authorization", "Proxy-Authorization", "pwd", "db_pwd", "gcp_credentials",
    ],
)  # fmt: skip
def test_secret_keys(key: str) -> None:
    assert is_secret(key)


@pytest.mark.parametrize(
    "key",
    ["ssl_keyfile", "key", "key_field", "token_field", "tokenizer", "user", "host", "passwords_db",
     "secretary", "ssl_certfile", "sasl_mechanism",
     # names ending in _key that name a field, a context key or an index
     "topic_context_key", "dead_letter_context_key", "routing_key", "partition_key", "primary_key", "sort_key",
     "shard_key", "Routing-Key", "ssl_key_location", "key_format"],
)  # fmt: skip
def test_non_secret_keys(key: str) -> None:
    assert not is_secret(key)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("postgresql://u:p@h/db", "postgresql://u:***@h/db"),
        (
            "mongodb+srv://admin:s3cr%40t@c0.example.net/x",
            "mongodb+srv://admin:***@c0.example.net/x",
        ),
        ("mqtt://u:p@h1, amqp://v:q@h2", "mqtt://u:***@h1, amqp://v:***@h2"),
        ("http://u@h/", "http://***@h/"),  # a lone userinfo may be a token: hidden
        ("https://TOKEN@host/x", "https://***@host/x"),
        # For database and broker schemes a lone userinfo is a user name: masking it would hide "postgres"
        # wherever it appears (bspump-postgresql, a database named postgres...).
        ("postgresql://postgres@127.0.0.1:5432/postgres", "postgresql://postgres@127.0.0.1:5432/postgres"),
        ("mongodb://reader@h/db, MQTT://pump@broker", "mongodb://reader@h/db, MQTT://pump@broker"),
        ("git+ssh://ghp_abc123@github.com/o/r.git", "git+ssh://***@github.com/o/r.git"),
        ("https://:pw@h", "https://:***@h"),
        ("https://me@example.com:p@ss@h/x", "https://me@example.com:***@h/x"),  # unencoded '@'s
        ("https://h/x?access_token=abc&y=1", "https://h/x?access_token=***&y=1"),
        ("sort_key=name api_key = \"k k\" z", "sort_key=name api_key = *** z"),
        ("mailto:someone@example.com", "mailto:someone@example.com"),
        ("://u@h", "://u@h"),
        ("http://h:8080/path@x", "http://h:8080/path@x"),
        ("host=h password=p dbname=d", "host=h password=*** dbname=d"),
        ("host=h password='a b' dbname=d", "host=h password=*** dbname=d"),
        ("https://h/x?user=u&password=p&y=1", "https://h/x?user=u&password=***&y=1"),
        ("plain text", "plain text"),
    ],
)
def test_redact_value(value: str, expected: str) -> None:
    assert redact_value(value) == expected


def test_redact_mapping() -> None:
    data = {
        "password": "p",
        "token": None,
        "port": 5432,
        "dsn": "pg://u:p@h",
        "hosts": ["pg://u:p@h", 1],
        "nested": {"api_key": "k", "x": "y"},
    }
    assert redact(data) == {
        "password": REDACTED,
        "token": None,
        "port": 5432,
        "dsn": "pg://u:***@h",
        "hosts": ["pg://u:***@h", 1],
        "nested": {"api_key": REDACTED, "x": "y"},
    }
    assert data["password"] == "p"  # the input is not modified


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("path = /srv/https://u:pw1@h/file.jsonl", "path = /srv/https://u:***@h/file.jsonl"),
        (
            "ConnectionError: cannot reach 'https://TOKEN9@api.example.com/v1' (timeout)",
            "ConnectionError: cannot reach 'https://***@api.example.com/v1' (timeout)",
        ),
        (
            'Traceback (most recent call last):\n  File "x.py", line 3, in connect\n'
            '    raise OSError("amqp://guest:guest1@mq:5672/ refused")\nOSError: amqp://guest:guest1@mq:5672/ refused',
            'Traceback (most recent call last):\n  File "x.py", line 3, in connect\n'
            '    raise OSError("amqp://guest:***@mq:5672/ refused")\nOSError: amqp://guest:***@mq:5672/ refused',
        ),
    ],
)
def test_redact_value_finds_credentials_anywhere_in_a_text(text: str, expected: str) -> None:
    assert redact_value(text) == expected


def test_redact_value_is_linear_on_long_texts() -> None:
    # shapes that make naive patterns backtrack; the result must still be right
    assert redact_value("a-" * 500_000 + "password=x") == "a-" * 500_000 + "password=***"
    assert redact_value("a" * 1_000_000 + "://u:p@h") == "a" * 1_000_000 + "://u:***@h"
    assert redact_value("x://" * 250_000) == "x://" * 250_000


# -- SecretMask ----------------------------------------------------------------------------------

CONF = """
[connection:PG]
dsn = postgresql://app:pg%40pass-77@db/prod
password = hunter2-SECRET
[connection:Kafka]
sasl_plain_password = abc
api_key = sk live/key+1
url = https://TOKENVALUE9@api.example.com/x
routing_key = events
[pipeline:P:Out]
path = /data/out.jsonl
"""


def conf_mask() -> SecretMask:
    return SecretMask.from_config(parse_config(CONF, filename="p.conf", environ={}))


def test_mask_hides_configured_secrets_in_any_text() -> None:
    mask = conf_mask()
    text = "login rejected for user 'app' with password 'hunter2-SECRET'"
    assert mask.mask(text) == "login rejected for user 'app' with password '***'"
    assert mask.mask("key sk live/key+1 used") == "key *** used"
    assert mask.mask("token TOKENVALUE9 expired") == "token *** expired"


def test_mask_takes_credentials_embedded_in_urls_of_any_key() -> None:
    mask = conf_mask()
    # the password of the DSN as written (percent-encoded) and as the client decodes it
    assert mask.mask("auth failed: pg@pass-77 / pg%40pass-77") == "auth failed: *** / ***"
    assert mask.mask("user app") == "user app"  # user names are not secret


@pytest.mark.parametrize("secret", ["hunter2-SECRET", "sk live/key+1", "pg@pass-77"])
def test_masked_text_contains_neither_the_secret_nor_its_encoded_forms(secret: str) -> None:
    mask = conf_mask()
    forms = {
        secret,
        urllib.parse.quote(secret, safe=""),
        re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), urllib.parse.quote(secret, safe="")),
        urllib.parse.quote_plus(secret),
        repr(secret),
        '{"password": "' + secret + '"}',
    }
    for form in forms:
        masked = mask.mask(f"error near {form} and again {form}.")
        assert secret not in masked and urllib.parse.quote(secret, safe="") not in masked, (form, masked)
        assert REDACTED in masked


def test_longest_secret_is_masked_first() -> None:
    mask = SecretMask()
    mask.add("abcd")
    mask.add("abcdefgh")
    assert mask.mask("x abcdefgh y abcd") == "x *** y ***"


def test_short_secrets_are_not_masked_but_reported_by_location() -> None:
    mask = conf_mask()
    assert mask.too_short == ("p.conf:6 [connection:Kafka] sasl_plain_password",)
    assert mask.mask("abc is everywhere: cabbage, abc") == "abc is everywhere: cabbage, abc"
    assert len("abc") < MIN_MASKED_LENGTH
    assert "abc" not in repr(mask)


def test_non_secret_values_are_not_masked() -> None:
    mask = conf_mask()
    assert mask.mask("routing key events at /data/out.jsonl") == "routing key events at /data/out.jsonl"


def test_add_mapping_for_constructor_configs() -> None:
    mask = SecretMask()
    mask.add_mapping(
        {
            "password": "pw-from-code",
            "port": 5432,
            "api_key": 12345678,
            "hosts": ["mqtt://u:listpass@h1"],
            "nested": {"token": "nested-token", "credentials": {"user": "u", "key": b"bytes-secret"}},
            "pin": "12",
            "secret": None,
        },
        source="connection:PG",
    )
    text = "pw-from-code 12345678 listpass nested-token bytes-secret 5432"
    assert mask.mask(text) == "*** *** *** *** *** 5432"
    # "pin" is not a secret key and None is no secret; below a secret key everything is secret
    assert mask.too_short == ("connection:PG nested credentials",)
    mask.add("ab", source="connection:X password")
    assert mask.too_short == ("connection:PG nested credentials", "connection:X password")


def test_multi_line_secret_is_also_masked_line_by_line() -> None:
    mask = SecretMask()
    mask.add("-----BEGIN KEY-----\nAAAABBBBCCCC\n-----END KEY-----")
    assert mask.mask("bad line: AAAABBBBCCCC") == "bad line: ***"


def test_empty_mask_only_redacts_known_shapes() -> None:
    mask = SecretMask()
    assert mask.mask("plain log line") == "plain log line"
    assert mask.mask("dsn pg://u:p@h") == "dsn pg://u:***@h"
    assert mask.too_short == ()


def test_a_user_name_in_a_database_url_is_not_collected_as_a_secret() -> None:
    conf = parse_config("[connection:PG]\ndsn = postgresql://postgres@db/postgres\n"
                        "[connection:API]\nurl = https://tok3n-value@api.example\n", filename="p.conf", environ={})
    mask = SecretMask.from_config(conf)
    assert mask.mask("bspump-postgresql: postgres@db") == "bspump-postgresql: postgres@db"
    assert mask.mask("sent tok3n-value") == "sent ***"
