"""Secret detection and redaction."""

from __future__ import annotations

import pytest

from bspump.config import REDACTED, is_secret, redact, redact_value


@pytest.mark.parametrize(
    "key",
    [
        "password", "PASSWORD", "passwd", "secret", "token", "api_key", "apikey", "api-key",
        "credentials", "private_key", "sasl_plain_password", "ssl_password", "client_secret",
        "access_token", "ssl_key_passwd", "openai_api_key", "x_apikey", "passphrase",
    ],
)  # fmt: skip
def test_secret_keys(key: str) -> None:
    assert is_secret(key)


@pytest.mark.parametrize(
    "key",
    ["ssl_keyfile", "key", "key_field", "token_field", "tokenizer", "user", "host", "passwords_db",
     "secretary", "ssl_certfile", "sasl_mechanism"],
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
        ("http://u@h/", "http://u@h/"),
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
