"""ElasticSearchConnection: where the cluster is, how to authenticate, and the one client its users share."""

from __future__ import annotations

import logging
import os
import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import bspump
from bspump.config import Int, Seconds
from elasticsearch import AsyncElasticsearch

from .errors import classify_es_error

if TYPE_CHECKING:
    from bspump import BSPumpApplication

log = logging.getLogger("bspump.elasticsearch")


class ElasticSearchConnection(bspump.Connection):
    """An Elasticsearch cluster shared by every sink, source and lookup that names it.

    Configured in ``[connection:ID]``::

        [connection:ESConnection]
        url = https://es-1:9200 https://es-2:9200
        api_key = ${ES_API_KEY}
        ca_certs = /etc/ssl/es-ca.pem

    Keys: ``url`` (one or more node URLs, separated by spaces, commas or new lines); authentication by
    ``api_key`` (the encoded key, secret) or ``username`` and ``password`` (secret); TLS by ``ca_certs``
    (a PEM file of the CA that signed the nodes' certificates) and ``verify_certs`` (leave it on outside
    tests); ``request_timeout`` (seconds one request may take); ``max_retries`` (how often the client
    itself tries another node after a network error or a 502/503/504 before the error reaches the sink,
    whose own retries then apply); ``connections_per_node`` (the HTTP pool size per node; at least the
    sinks' ``concurrency``); ``http_compress`` (gzip request bodies: less network, more CPU);
    ``sniff_on_start`` and ``sniff_on_node_failure`` (discover the cluster's other nodes; off by default,
    as behind a load balancer or in a container network the nodes' published addresses are often not
    reachable).

    One ``AsyncElasticsearch`` client serves every user of the connection (it pools HTTP connections per
    node). The connection is ready once the cluster answered a health request; when a user reports that
    the cluster is unreachable, the client is closed and a new one probes with backoff while the pipelines
    that use the connection pause. Errors are classified by :meth:`classify`: unreachable nodes are link
    failures, 429 and 5xx answers and timeouts transient, other refusals permanent.
    """

    ConfigDefaults: ClassVar[dict[str, Any]] = {
        "url": "http://localhost:9200",
        "username": "",
        "password": "",
        "api_key": "",
        "ca_certs": "",
        "verify_certs": True,
        "request_timeout": Seconds(30.0, min=0.1, max=3600.0),
        "max_retries": Int(3, min=0, max=100),
        "connections_per_node": Int(10, min=1, max=1000),
        "http_compress": False,
        "sniff_on_start": False,
        "sniff_on_node_failure": False,
    }

    def __init__(
        self,
        app: BSPumpApplication,
        connection_id: str | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(app, connection_id, config=config)
        config = self.Config
        urls = [url.rstrip("/") for part in config.getlist("url") for url in part.split()]
        if not urls:
            raise config.error("url", "is required: the URL of at least one node, e.g. http://localhost:9200")
        self.username = str(config.get("username") or "")
        self._password = str(config.get("password") or "")
        self.urls: list[str] = []
        for url in urls:
            parts = urllib.parse.urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise config.error("url", f"{_without_credentials(url)!r} is not an http:// or https:// URL")
            if parts.username and not self.username:  # http://user:password@host:9200, as older setups write it
                self.username = urllib.parse.unquote(parts.username)
                self._password = urllib.parse.unquote(parts.password or "")
            self.urls.append(_without_credentials(url))
        self._api_key = str(config.get("api_key") or "")
        if self._api_key and self.username:
            raise config.error("api_key", "and username/password are both set; choose one way to authenticate")
        if not self._api_key and bool(self.username) != bool(self._password):
            raise config.error("username" if not self.username else "password",
                               "basic authentication needs both username and password")
        self.ca_certs = config.getpath("ca_certs")
        self.verify_certs = config.getboolean("verify_certs")
        self.request_timeout = config.getseconds("request_timeout")
        self.max_retries = config.getint("max_retries")
        self.connections_per_node = config.getint("connections_per_node")
        self.http_compress = config.getboolean("http_compress")
        self.sniff_on_start = config.getboolean("sniff_on_start")
        self.sniff_on_node_failure = config.getboolean("sniff_on_node_failure")
        self._client: AsyncElasticsearch | None = None

    # -- framework API ------------------------------------------------------------------------------------
    def preflight(self) -> None:
        """The CA file must exist before anything connects."""
        if self.ca_certs and not os.path.isfile(self.ca_certs):
            raise self.Config.error("ca_certs", f"{self.ca_certs} is not a file")

    async def connect(self) -> None:
        """Create the client and ask for cluster health: the cluster answers, with these credentials."""
        client = self.make_client()
        self._client = client
        try:
            await client.cluster.health()
        except Exception as exc:
            if getattr(exc, "status_code", None) == 403:
                # Authenticated, but without the monitor privilege: a writer's key often lacks it.
                log.info("connection %r: credentials accepted (no privilege for cluster health)", self.id)
                return
            raise

    async def disconnect(self) -> None:
        """Close the client's HTTP connections; called before reconnecting and at shutdown."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def classify(self, error: BaseException) -> bspump.ErrorKind:
        """Link, transient or permanent, for the client's exceptions and the sink's item errors."""
        return classify_es_error(error)

    # -- for sinks, sources and lookups ---------------------------------------------------------------------
    @property
    def client(self) -> AsyncElasticsearch:
        """The shared client; only valid while the connection is ready (users wait for that)."""
        client = self._client
        if client is None:
            raise ConnectionError(f"connection {self.id!r} is not connected")
        return client

    @property
    def current_client(self) -> AsyncElasticsearch | None:
        """The shared client, or None while there is none (connecting, reconnecting, closed)."""
        return self._client

    def make_client(self) -> AsyncElasticsearch:
        """A new client with this connection's settings (the connection's own one is :attr:`client`)."""
        options: dict[str, Any] = {
            "request_timeout": self.request_timeout,
            "max_retries": self.max_retries,
            "retry_on_timeout": False,  # a timed-out bulk is the sink's to retry, with its backoff
            # Not 429: a sink answers a busy cluster with smaller requests after a backoff, not at once.
            "retry_on_status": (502, 503, 504),
            "connections_per_node": self.connections_per_node,
            "http_compress": self.http_compress,
            "sniff_on_start": self.sniff_on_start,
            "sniff_on_node_failure": self.sniff_on_node_failure,
            "verify_certs": self.verify_certs,
        }
        if self.ca_certs:
            options["ca_certs"] = self.ca_certs
        if not self.verify_certs:
            options["ssl_show_warn"] = False
        if self._api_key:
            options["api_key"] = self._api_key
        elif self.username:
            options["basic_auth"] = (self.username, self._password)
        return AsyncElasticsearch(self.urls, **options)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id!r} {self.state.value} {[_without_credentials(u) for u in self.urls]}>"


def _without_credentials(url: str) -> str:
    """``url`` with any ``user:password@`` removed."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url.rpartition("@")[2]
    return f"{scheme}://{rest.rpartition('@')[2]}"
