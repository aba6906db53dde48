"""PostgreSQLConnection's configuration and error classification, without a server."""

from __future__ import annotations

import ssl
from pathlib import Path

import asyncpg
import pytest

from bspump import ConfigError, ErrorKind
from bspump.postgresql import PostgreSQLConnection
from bspump.testing import make_app


def connection(**config: object) -> PostgreSQLConnection:
    return PostgreSQLConnection(make_app(), "PG", config=config)


def test_keys_become_asyncpg_arguments_with_session_settings() -> None:
    arguments = connection(host="db", port=6543, database="sales", user="app", password="pw",
                           statement_timeout="2.5s", application_name="orders",
                           server_settings="search_path=app,  work_mem=64MB").connect_arguments()
    assert arguments == {"host": "db", "port": 6543, "database": "sales", "user": "app", "password": "pw",
                         "ssl": "prefer", "server_settings": {"search_path": "app", "work_mem": "64MB",
                                                             "application_name": "orders",
                                                             "statement_timeout": "2500"}}


def test_a_dsn_keeps_its_own_port_unless_one_is_set() -> None:
    assert "port" not in connection(dsn="postgresql://u@h:7777/d").connect_arguments()
    assert connection(dsn="postgresql://u@h/d", port=5433).connect_arguments()["port"] == 5433


def test_bad_server_settings_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"server_settings.*name=value"):
        connection(server_settings="work_mem")


def test_ssl_modes_and_certificates(tmp_path: Path) -> None:
    assert connection(sslmode="disable").connect_arguments()["ssl"] is False
    assert connection(sslmode="verify-full").connect_arguments()["ssl"] == "verify-full"
    with pytest.raises(ConfigError, match="sslmode"):
        connection(sslmode="sometimes")
    missing = connection(sslmode="verify-ca", sslrootcert=str(tmp_path / "ca.pem"))
    with pytest.raises(ConfigError, match=r"sslrootcert.*no such file"):
        missing.preflight()
    key = tmp_path / "client.key"
    key.write_text("not used")
    with pytest.raises(ConfigError, match=r"sslkey.*sslcert"):
        connection(sslkey=str(key)).preflight()


def test_a_ca_file_gives_a_verifying_context() -> None:
    ca = ssl.get_default_verify_paths().cafile
    if not ca:
        pytest.skip("no system CA bundle")
    context = connection(sslmode="verify-ca", sslrootcert=ca).connect_arguments()["ssl"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and not context.check_hostname
    full = connection(sslmode="verify-full", sslrootcert=ca).connect_arguments()["ssl"]
    assert full.check_hostname


def test_pool_bounds_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"pool_min.*pool_max"):
        connection(pool_min=5, pool_max=2).preflight()


def test_the_password_never_shows() -> None:
    pg = connection(password="Very-S3cret", dsn="postgresql://app:Other-S3cret@db/sales")
    shown = repr(pg) + repr(pg.Config) + str(pg.Config.redacted())
    assert "Very-S3cret" not in shown and "Other-S3cret" not in shown


@pytest.mark.parametrize(("error", "kind"), [
    (asyncpg.exceptions.SerializationError("could not serialize access"), ErrorKind.TRANSIENT),
    (asyncpg.exceptions.DeadlockDetectedError("deadlock detected"), ErrorKind.TRANSIENT),
    (asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"), ErrorKind.TRANSIENT),
    (asyncpg.exceptions.TooManyConnectionsError("too many clients"), ErrorKind.TRANSIENT),
    (asyncpg.exceptions.AdminShutdownError("terminating connection"), ErrorKind.LINK),
    (asyncpg.exceptions.CannotConnectNowError("the database system is starting up"), ErrorKind.LINK),
    (asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"), ErrorKind.LINK),
    (asyncpg.exceptions.ConnectionFailureError("connection failure"), ErrorKind.LINK),
    (asyncpg.InterfaceError("pool is closing"), ErrorKind.LINK),
    (ConnectionResetError(104, "reset"), ErrorKind.LINK),
    (ConnectionError("PostgreSQL connection 'PG' is not ready"), ErrorKind.LINK),
    (asyncpg.exceptions.UniqueViolationError("duplicate key"), ErrorKind.PERMANENT),
    (asyncpg.exceptions.NotNullViolationError("null value"), ErrorKind.PERMANENT),
    (asyncpg.exceptions.InvalidTextRepresentationError("invalid input syntax"), ErrorKind.PERMANENT),
    (asyncpg.exceptions.UndefinedTableError("relation does not exist"), ErrorKind.PERMANENT),
    (asyncpg.exceptions.DataError("invalid input for query argument $1"), ErrorKind.PERMANENT),
    (asyncpg.InterfaceError("the server expects 2 arguments"), ErrorKind.PERMANENT),
])
def test_errors_are_classified(error: BaseException, kind: ErrorKind) -> None:
    assert connection().classify(error) is kind


def test_sources_that_commit_while_reading_need_two_pooled_connections() -> None:
    from bspump import Pipeline
    from bspump.postgresql import PostgreSQLCDCSource, PostgreSQLSource

    app = make_app()
    app.pump_service.add_connection(PostgreSQLConnection(app, "PostgreSQLConnection", config={"pool_max": 1}))
    pipeline = Pipeline(app, "P")
    cdc = PostgreSQLCDCSource(app, pipeline, config={"slot": "s", "publication": "p"})
    with pytest.raises(ConfigError, match=r"pool_max must be at least 2, not 1"):
        cdc.preflight()
    query = PostgreSQLSource(app, pipeline, id="Q", config={"query": "SELECT 1 AS n"})
    query.preflight()  # without incremental mode it commits nothing
    incremental = PostgreSQLSource(app, pipeline, id="I", config={
        "query": "SELECT n FROM t WHERE n > $1", "incremental_column": "n", "start_value": "0"})
    with pytest.raises(ConfigError, match="pool_max"):
        incremental.preflight()
