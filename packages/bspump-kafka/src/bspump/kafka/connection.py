"""KafkaConnection: where the cluster is, how to authenticate, and which client library to use."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import bspump
from bspump.backoff import Backoff
from bspump.config import Choice, Int, Seconds

from .backend import Backend, load_backend
from .options import CLIENTS, SASL_MECHANISMS, SECURITY_PROTOCOLS, ClientOptions

if TYPE_CHECKING:
    from bspump import BSPumpApplication

log = logging.getLogger("bspump.kafka")


class KafkaConnection(bspump.Connection):
    """A Kafka cluster shared by every :class:`KafkaSource` and :class:`KafkaSink` that names it.

    Configured in ``[connection:ID]``::

        [connection:KafkaConnection]
        bootstrap_servers = kafka-1:9092, kafka-2:9092
        security_protocol = SASL_SSL
        sasl_mechanism = SCRAM-SHA-512
        sasl_plain_username = pump
        sasl_plain_password = ${KAFKA_PASSWORD}
        ssl_cafile = /etc/kafka/ca.pem
        client = confluent          # aiokafka (default) or confluent

    Keys: ``client`` (``aiokafka``, pure Python, or ``confluent``, librdkafka: ``pip install
    'bspump-kafka[confluent]'``); ``bootstrap_servers`` (host:port, comma-separated); ``client_id``;
    ``security_protocol`` (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL); ``sasl_mechanism`` (PLAIN,
    SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER, GSSAPI), ``sasl_plain_username``, ``sasl_plain_password``
    (secret), ``sasl_kerberos_service_name``; ``ssl_cafile``, ``ssl_certfile``, ``ssl_keyfile``,
    ``ssl_password`` (secret), ``ssl_check_hostname``; the clients' ``request_timeout_ms``,
    ``metadata_max_age_ms``, ``retry_backoff_ms``, ``reconnect_backoff_ms`` (librdkafka only: its first delay
    before reconnecting to a broker) and ``connections_max_idle_ms``. ``client_log_interval``: the client
    library's log records are rate-limited to one line per distinct message per that many seconds, with a
    count of the lines held back (0: no limit).

    Each source owns a consumer (its group membership) and each sink a producer, both built from these
    options; the client libraries keep their own sockets alive. The connection is the health gate: it is
    ready once cluster metadata could be fetched with these settings, and when a source or sink reports
    that the cluster is unreachable it probes again with backoff while the pipelines that use it pause.
    While it does, the clients wait for it (:meth:`wait_for_link`) instead of retrying at once: the
    connection's ``reconnect_initial``/``reconnect_max`` backoff is what paces them (librdkafka's own
    reconnect backoff is capped at ``reconnect_max`` too).
    """

    ConfigDefaults: ClassVar[dict[str, Any]] = {
        "client": Choice("aiokafka", CLIENTS),
        "bootstrap_servers": "localhost:9092",
        "client_id": "bspump",
        "security_protocol": Choice("PLAINTEXT", SECURITY_PROTOCOLS),
        "sasl_mechanism": Choice("", SASL_MECHANISMS),
        "sasl_plain_username": "",
        "sasl_plain_password": "",
        "sasl_kerberos_service_name": "kafka",
        "ssl_cafile": "",
        "ssl_certfile": "",
        "ssl_keyfile": "",
        "ssl_password": "",
        "ssl_check_hostname": True,
        "request_timeout_ms": Int(40000, min=1),
        "metadata_max_age_ms": Int(300000, min=0),
        "retry_backoff_ms": Int(100, min=0),
        "reconnect_backoff_ms": Int(20, min=0),
        "connections_max_idle_ms": Int(540000, min=0),
        "client_log_interval": Seconds(10.0, min=0.0),
    }

    def __init__(
        self,
        app: BSPumpApplication,
        connection_id: str | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(app, connection_id, config=config)
        self.client = self.Config.getchoice("client")
        self.options = self._read_options()
        try:
            self.backend: Backend = load_backend(self.client)
        except ImportError as exc:
            raise self.Config.error(
                "client",
                f"client = {self.client} needs a library that is not installed ({exc}); "
                "install it with: pip install 'bspump-kafka[confluent]'",
            ) from None
        self._link_floor = max(self.options.retry_backoff_ms / 1000, 0.01)
        self._link_backoff = Backoff(initial=self._link_floor, maximum=self.Config.getseconds("reconnect_max"))
        self.backend.limit_logs(self.Config.getseconds("client_log_interval"))

    def _read_options(self) -> ClientOptions:
        config = self.Config
        servers = tuple(config.getlist("bootstrap_servers"))
        if not servers:
            raise config.error("bootstrap_servers", "is required: host:port of at least one broker")
        protocol = config.getchoice("security_protocol")
        mechanism = config.getchoice("sasl_mechanism")
        if protocol.startswith("SASL_"):
            mechanism = mechanism or "PLAIN"
            if mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512") and not (
                config.get("sasl_plain_username") and config.get("sasl_plain_password")
            ):
                raise config.error("sasl_plain_username",
                                   f"security_protocol = {protocol} with sasl_mechanism = {mechanism} needs "
                                   "sasl_plain_username and sasl_plain_password")
        elif mechanism:
            raise config.error("sasl_mechanism",
                               f"is set but security_protocol = {protocol} does not use SASL; "
                               "choose SASL_PLAINTEXT or SASL_SSL")
        return ClientOptions(
            bootstrap_servers=servers,
            client_id=str(config.get("client_id")),
            security_protocol=protocol,
            sasl_mechanism=mechanism,
            sasl_plain_username=str(config.get("sasl_plain_username") or ""),
            sasl_plain_password=str(config.get("sasl_plain_password") or ""),
            sasl_kerberos_service_name=str(config.get("sasl_kerberos_service_name")),
            ssl_cafile=str(config.get("ssl_cafile") or ""),
            ssl_certfile=str(config.get("ssl_certfile") or ""),
            ssl_keyfile=str(config.get("ssl_keyfile") or ""),
            ssl_password=str(config.get("ssl_password") or ""),
            ssl_check_hostname=config.getboolean("ssl_check_hostname"),
            request_timeout_ms=config.getint("request_timeout_ms"),
            metadata_max_age_ms=config.getint("metadata_max_age_ms"),
            retry_backoff_ms=config.getint("retry_backoff_ms"),
            reconnect_backoff_ms=config.getint("reconnect_backoff_ms"),
            connections_max_idle_ms=config.getint("connections_max_idle_ms"),
            reconnect_backoff_max_ms=max(int(config.getseconds("reconnect_max") * 1000), 1),
        )

    async def connect(self) -> None:
        """Fetch cluster metadata once with the configured address, TLS and credentials."""
        timeout = max(self.options.request_timeout_ms / 1000, 1.0)
        await self.backend.probe(self.options, timeout)

    async def disconnect(self) -> None:
        """Nothing to release: sources and sinks own their clients and close them themselves."""

    async def wait_for_link(self, error: BaseException | None = None) -> None:
        """Called by a source's or sink's client (from inside the client library) that found the cluster
        unreachable: reports the failure, then returns as soon as this connection's probe, retried with its
        backoff, reached the cluster again, or after a delay that doubles from ``retry_backoff_ms`` up to
        ``reconnect_max`` with each call (reset by :meth:`link_restored`), whichever comes first.

        Bounded, so that a client still gets to run its own housekeeping at that pace (aiokafka expires
        undeliverable batches only between refreshes) and a closed connection never holds it for ever; and
        never shorter than ``retry_backoff_ms``, so that a client whose own requests keep failing while the
        probe succeeds cannot spin either."""
        started = time.monotonic()
        delay = self._link_backoff.next_delay()
        if self.state is bspump.ConnectionState.READY:
            self.report_failure(error)
        if self.state in (bspump.ConnectionState.RECONNECTING, bspump.ConnectionState.CONNECTING):
            try:
                await self.wait_ready(timeout=delay)
            except TimeoutError:
                return
        else:  # closing or closed: nothing to wait for but the pace
            await asyncio.sleep(delay)
            return
        rest = self._link_floor - (time.monotonic() - started)
        if rest > 0:
            await asyncio.sleep(rest)

    def link_restored(self) -> None:
        """A client's request succeeded again: the next :meth:`wait_for_link` starts from the shortest wait."""
        self._link_backoff.reset()

    def classify(self, error: BaseException) -> bspump.ErrorKind:
        """Errors of either client library: link when the cluster is unreachable, transient when the broker
        asks to try again (no leader, rebalance in progress, queue full), permanent otherwise."""
        return self.backend.classify(error)

    def __repr__(self) -> str:
        return (f"<KafkaConnection {self.id!r} {self.state.value} client={self.client} "
                f"servers={','.join(self.options.bootstrap_servers)} {self.options.security_protocol}>")
