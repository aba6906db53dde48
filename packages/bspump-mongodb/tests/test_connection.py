"""MongoDBConnection's configuration: client options, checks before start, secrets."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import connection

import bspump
from bspump.config import ConfigError


def test_parts_become_client_options(app: bspump.BSPumpApplication, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    conn = connection(app, host="db.example", port=27019, username="pump", password="s3cret-value",
                      auth_source="admin", auth_mechanism="scram-sha-256", tls_ca_file=str(ca), replica_set="rs0",
                      max_pool_size=7, server_selection_timeout="2s", direct_connection="false")
    options = conn.client_options()
    assert options["port"] == 27019 and options["username"] == "pump" and options["password"] == "s3cret-value"
    assert options["authSource"] == "admin" and options["authMechanism"] == "SCRAM-SHA-256"
    assert options["tls"] is True and options["tlsCAFile"] == str(ca)
    assert options["replicaSet"] == "rs0" and options["maxPoolSize"] == 7
    assert options["serverSelectionTimeoutMS"] == 2000 and options["directConnection"] is False
    assert "socketTimeoutMS" not in options  # 0: none
    assert conn.default_database == "bspump"


def test_a_uri_gives_the_database_and_keeps_its_own_options(app: bspump.BSPumpApplication) -> None:
    conn = connection(app, uri="mongodb://a:27017,b:27017/shop?replicaSet=rs0")
    assert conn.default_database == "shop"
    options = conn.client_options()
    assert "port" not in options and "replicaSet" not in options and "tls" not in options
    conn.preflight()


@pytest.mark.parametrize(("config", "key", "words"), [
    ({"uri": "http://db:27017"}, "uri", "mongodb://"),
    ({"uri": "mongodb://db:notaport"}, "uri", "not a valid MongoDB URI"),
    ({"write_concern": "0"}, "write_concern", "unacknowledged"),
    ({"tls_ca_file": "/nonexistent/ca.pem"}, "tls_ca_file", "no such file"),
])
def test_preflight_names_the_key_at_fault(app: bspump.BSPumpApplication, config: dict[str, str], key: str,
                                          words: str) -> None:
    conn = connection(app, **config)
    with pytest.raises(ConfigError) as raised:
        conn.preflight()
    assert key in str(raised.value) and words in str(raised.value)


def test_secrets_stay_out_of_repr(app: bspump.BSPumpApplication) -> None:
    conn = connection(app, password="s3cret-value", tls_certificate_key_file_password="k3y-secret")
    shown = repr(conn) + repr(conn.Config)
    assert "s3cret-value" not in shown and "k3y-secret" not in shown


def test_the_client_is_refused_before_connecting(app: bspump.BSPumpApplication) -> None:
    conn = connection(app)
    with pytest.raises(ConnectionError, match="not connected"):
        conn.client
