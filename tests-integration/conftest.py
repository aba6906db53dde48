"""Fixtures for bspump integration tests against real servers on loopback.

Servers are found through ``BSPUMP_TEST_*`` environment variables with loopback
defaults (see ``servers/README.md``). Locally they are started with
``bash tests-integration/servers/run.sh start``; in GitHub Actions they are
service containers. Every test gets isolated names (topic, schema, database,
index, MQTT topic prefix) derived from its node id plus a random suffix.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import secrets
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import ClassVar, NamedTuple

import pytest
import pytest_asyncio

HERE = Path(__file__).resolve().parent
RUN_SH = HERE / "servers" / "run.sh"


def _load_harness() -> ModuleType:
    """``servers/harness.py`` (stdlib only), for its protocol probes."""
    spec = importlib.util.spec_from_file_location(
        "bspump_servers_harness", HERE / "servers" / "harness.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DEFAULTS = {
    "BSPUMP_TEST_KAFKA": "127.0.0.1:9092",
    "BSPUMP_TEST_POSTGRES_DSN": "postgresql://postgres@127.0.0.1:5432/postgres",
    "BSPUMP_TEST_MQTT": "127.0.0.1:1883",
    "BSPUMP_TEST_MONGODB_URI": "mongodb://127.0.0.1:27017/",
    "BSPUMP_TEST_MONGODB_CS_URI": "mongodb://127.0.0.1:27018/?directConnection=true",
    "BSPUMP_TEST_ELASTICSEARCH_URL": "http://127.0.0.1:9200",
}


class Address(NamedTuple):
    """``host:port`` of a server; ``str()`` gives ``host:port``."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, value: str, default_port: int) -> Address:
        host, _, port = value.strip().rpartition(":")
        if not host:
            return cls(value.strip(), default_port)
        return cls(host.strip("[]"), int(port))


def _env(name: str) -> str:
    return os.environ.get(name) or DEFAULTS[name]


def _reachable(address: Address, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((address.host, address.port), timeout=timeout):
            return True
    except OSError:
        return False


_checked: set[Address] = set()


def _require(server: str, variable: str, address: Address) -> None:
    """Fail (never skip) with a hint when a server does not accept connections."""
    if address in _checked:
        return
    if not _reachable(address):
        pytest.fail(
            f"{server} is not reachable at {address} ({variable}={_env(variable)!r}). "
            f"Start it with: bash tests-integration/servers/run.sh start {server}",
            pytrace=False,
        )
    _checked.add(address)


def _url_address(url: str, default_port: int) -> Address:
    # A MongoDB URI may list several hosts; the first one is checked.
    netloc = urllib.parse.urlsplit(url).netloc.rpartition("@")[2].split(",")[0]
    return Address.parse(netloc, default_port)


def unique_name(
    request: pytest.FixtureRequest, sep: str = "_", max_len: int = 48
) -> str:
    """``bt<sep><test name><sep><random>``, lowercase, only ``[a-z0-9]`` and ``sep``."""
    base = re.sub(r"[^a-z0-9]+", sep, request.node.name.lower()).strip(sep)
    suffix = secrets.token_hex(4)
    base = base[: max_len - len(suffix) - 4].strip(sep)
    return f"bt{sep}{base}{sep}{suffix}"


# Kafka ---------------------------------------------------------------------------


@pytest.fixture
def kafka_bootstrap() -> str:
    """Bootstrap servers string, e.g. ``127.0.0.1:9092``."""
    value = _env("BSPUMP_TEST_KAFKA")
    _require("kafka", "BSPUMP_TEST_KAFKA", Address.parse(value.split(",")[0], 9092))
    return value


TopicFactory = Callable[..., Awaitable[str]]


@pytest_asyncio.fixture
async def kafka_topic_factory(
    kafka_bootstrap: str, request: pytest.FixtureRequest
) -> AsyncIterator[TopicFactory]:
    """``await factory(partitions=3, config=None) -> topic``; topics are deleted afterwards."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(
        bootstrap_servers=kafka_bootstrap, request_timeout_ms=15000
    )
    await admin.start()
    created: list[str] = []

    async def create(partitions: int = 3, config: dict[str, str] | None = None) -> str:
        name = unique_name(request, sep="-", max_len=120)
        await admin.create_topics(
            [
                NewTopic(
                    name,
                    num_partitions=partitions,
                    replication_factor=1,
                    topic_configs=config or {},
                )
            ]
        )
        created.append(name)
        # Wait until every partition has a leader so clients do not race the metadata.
        deadline = time.monotonic() + 15
        while True:
            described = await admin.describe_topics([name])
            parts = described[0].get("partitions", []) if described else []
            if len(parts) == partitions and all(
                p.get("leader", -1) >= 0 for p in parts
            ):
                return name
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"topic {name} has no leaders after 15 s: {described}"
                )
            await asyncio.sleep(0.1)

    try:
        yield create
    finally:
        try:
            if created:
                await admin.delete_topics(created)
        finally:
            await admin.close()


# PostgreSQL ----------------------------------------------------------------------


@pytest.fixture
def postgres_dsn() -> str:
    dsn = _env("BSPUMP_TEST_POSTGRES_DSN")
    _require("postgresql", "BSPUMP_TEST_POSTGRES_DSN", _url_address(dsn, 5432))
    return dsn


@pytest_asyncio.fixture
async def pg_schema(
    postgres_dsn: str, request: pytest.FixtureRequest
) -> AsyncIterator[str]:
    """A fresh schema (``CREATE SCHEMA``), dropped with CASCADE afterwards."""
    import asyncpg

    name = unique_name(request, max_len=60)
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute(f'CREATE SCHEMA "{name}"')
    finally:
        await conn.close()
    try:
        yield name
    finally:
        conn = await asyncpg.connect(postgres_dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        finally:
            await conn.close()


# MongoDB wire protocol -------------------------------------------------------------


@pytest.fixture
def mongodb_uri() -> str:
    """FerretDB (or MongoDB): CRUD, aggregation, indexes."""
    uri = _env("BSPUMP_TEST_MONGODB_URI")
    _require("ferretdb", "BSPUMP_TEST_MONGODB_URI", _url_address(uri, 27017))
    return uri


@pytest.fixture
def mongodb_cs_uri() -> str:
    """SecantusDB (or a MongoDB replica set): change streams and transactions."""
    uri = _env("BSPUMP_TEST_MONGODB_CS_URI")
    _require("secantusdb", "BSPUMP_TEST_MONGODB_CS_URI", _url_address(uri, 27018))
    return uri


@pytest_asyncio.fixture
async def mongo_db_name(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A unique database name, dropped afterwards on the servers the test asked for."""
    name = unique_name(request, max_len=60)
    yield name
    from pymongo import AsyncMongoClient

    for fixture in ("mongodb_uri", "mongodb_cs_uri"):
        if fixture in request.fixturenames:
            uri: str = request.getfixturevalue(fixture)
            client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
                uri, serverSelectionTimeoutMS=5000
            )
            try:
                await client.drop_database(name)
            finally:
                await client.close()


# Elasticsearch -------------------------------------------------------------------


@pytest.fixture
def elasticsearch_url() -> str:
    url = _env("BSPUMP_TEST_ELASTICSEARCH_URL").rstrip("/")
    _require("elasticsearch", "BSPUMP_TEST_ELASTICSEARCH_URL", _url_address(url, 9200))
    return url


@pytest.fixture
def es_index(elasticsearch_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A unique index name (lowercase); the index and ``<name>-*`` are deleted afterwards."""
    name = unique_name(request, sep="-", max_len=100)
    yield name
    for pattern in (name, f"{name}-*"):
        req = urllib.request.Request(
            f"{elasticsearch_url}/{pattern}?ignore_unavailable=true&allow_no_indices=true",
            method="DELETE",
        )
        try:
            urllib.request.urlopen(req, timeout=10).close()
        except urllib.error.URLError:
            pass


# MQTT ------------------------------------------------------------------------------


@pytest.fixture
def mqtt_address() -> Address:
    """``Address(host, port)`` of the MQTT broker; ``str()`` gives ``host:port``."""
    address = Address.parse(_env("BSPUMP_TEST_MQTT"), 1883)
    _require("mosquitto", "BSPUMP_TEST_MQTT", address)
    return address


@pytest.fixture
def mqtt_topic_prefix(request: pytest.FixtureRequest) -> str:
    """A unique topic prefix ending with ``/``, e.g. ``bspump-test/test_x_1a2b3c4d/``."""
    return f"bspump-test/{unique_name(request)}/"


# Server control (reconnection tests) -------------------------------------------------


class ServerControl:
    """Stop/start/restart a test server from a test.

    Mode ``BSPUMP_TEST_SERVER_CONTROL``: ``run.sh`` (default) drives
    ``tests-integration/servers/run.sh``; ``docker`` drives containers named
    ``bspump-<name>`` (the GitHub workflow; ``bspump-mongodb`` for both MongoDB
    names) and waits for the protocol to answer; ``none`` skips the calling test.
    """

    NAMES = (
        "postgresql",
        "mosquitto",
        "kafka",
        "ferretdb",
        "secantusdb",
        "elasticsearch",
    )
    # In the GitHub workflow one MongoDB replica set stands in for both wire servers.
    DOCKER_ALIASES: ClassVar[dict[str, str]] = {
        "ferretdb": "mongodb",
        "secantusdb": "mongodb",
    }

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def _check(self, name: str) -> None:
        if name not in self.NAMES:
            raise ValueError(f"unknown server {name!r}; expected one of {self.NAMES}")
        if self.mode == "none":
            pytest.skip(
                "BSPUMP_TEST_SERVER_CONTROL=none: servers cannot be stopped from tests here"
            )

    def _run(self, *cmd: str, timeout: float = 300) -> str:
        proc = subprocess.run(
            cmd, check=False, capture_output=True, text=True, timeout=timeout
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        return proc.stdout

    def _harness(self, action: str, name: str) -> str:
        self._check(name)
        if self.mode == "docker":
            container = f"bspump-{self.DOCKER_ALIASES.get(name, name)}"
            out = self._run("docker", action, container)
            if action != "stop":
                self._wait_ready(name)
            return out
        return self._run("bash", str(RUN_SH), action, name)

    def _wait_ready(self, name: str, timeout: float = 120) -> None:
        """Wait for the protocol to answer (a published container port accepts TCP early)."""
        harness = _load_harness()
        address, probe = {
            "postgresql": (
                _url_address(_env("BSPUMP_TEST_POSTGRES_DSN"), 5432),
                harness.probe_postgres,
            ),
            "mosquitto": (
                Address.parse(_env("BSPUMP_TEST_MQTT"), 1883),
                harness.probe_mqtt,
            ),
            "kafka": (
                Address.parse(_env("BSPUMP_TEST_KAFKA").split(",")[0], 9092),
                harness.probe_kafka,
            ),
            "ferretdb": (
                _url_address(_env("BSPUMP_TEST_MONGODB_URI"), 27017),
                harness.probe_mongo,
            ),
            "secantusdb": (
                _url_address(_env("BSPUMP_TEST_MONGODB_CS_URI"), 27018),
                harness.probe_mongo,
            ),
            "elasticsearch": (
                _url_address(_env("BSPUMP_TEST_ELASTICSEARCH_URL"), 9200),
                harness.probe_elasticsearch,
            ),
        }[name]
        deadline = time.monotonic() + timeout
        while not probe(address.port, address.host):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{name} did not answer on {address} after {timeout:.0f} s"
                )
            time.sleep(0.3)

    def stop(self, name: str) -> str:
        return self._harness("stop", name)

    def start(self, name: str) -> str:
        """Start and wait until the server answers."""
        return self._harness("start", name)

    def restart(self, name: str) -> str:
        """Stop, start, and wait until the server answers (data is kept)."""
        return self._harness("restart", name)


@pytest.fixture
def server_control() -> Iterator[ServerControl]:
    control = ServerControl(os.environ.get("BSPUMP_TEST_SERVER_CONTROL", "run.sh"))
    stopped: list[str] = []
    original_stop = control.stop

    def tracking_stop(name: str) -> str:
        stopped.append(name)
        return original_stop(name)

    control.stop = tracking_stop  # type: ignore[method-assign]
    yield control
    # A test that stopped a server (and maybe failed before starting it again) must
    # not break the tests after it: bring such servers back (start is idempotent).
    for name in dict.fromkeys(stopped):
        control.start(name)
