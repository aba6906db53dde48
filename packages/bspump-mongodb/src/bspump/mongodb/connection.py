"""MongoDBConnection: where the deployment is, how to authenticate, and the client every component shares."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any, ClassVar

from pymongo import AsyncMongoClient, ReadPreference, WriteConcern
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.read_preferences import _ServerMode
from pymongo.uri_parser import parse_uri

import bspump
from bspump import ErrorKind
from bspump.config import Choice, Int, Seconds

from .errors import classify_mongo_error

log = logging.getLogger("bspump.mongodb")

Document = dict[str, Any]

AUTH_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-1", "MONGODB-X509", "MONGODB-AWS", "GSSAPI", "PLAIN",
                   "MONGODB-OIDC")
READ_PREFERENCES: dict[str, _ServerMode] = {
    "primary": ReadPreference.PRIMARY,
    "primaryPreferred": ReadPreference.PRIMARY_PREFERRED,
    "secondary": ReadPreference.SECONDARY,
    "secondaryPreferred": ReadPreference.SECONDARY_PREFERRED,
    "nearest": ReadPreference.NEAREST,
}
#: Where no database is configured (neither ``database`` nor the URI's path names one).
DEFAULT_DATABASE = "bspump"


class MongoDBConnection(bspump.Connection):
    """A MongoDB deployment (standalone, replica set or sharded cluster) shared by every MongoDB source, sink,
    lookup and checkpoint store that names it; one ``AsyncMongoClient`` with its connection pool.

    Configured in ``[connection:ID]``, either by URI or by parts::

        [connection:MongoDBConnection]
        uri = mongodb://db-1:27017,db-2:27017/?replicaSet=rs0
        database = shop
        username = pump
        password = ${MONGO_PASSWORD}
        tls = true
        tls_ca_file = /etc/mongo/ca.pem

    Keys: ``uri`` (a ``mongodb://`` or ``mongodb+srv://`` URI; when set, ``host`` and ``port`` are not used,
    and the keys below that are set override the URI's options); ``host`` and ``port``; ``database`` (the
    database of components that name none; default the URI's, else ``bspump``); ``username``, ``password``
    (secret), ``auth_source`` and ``auth_mechanism`` (empty: the driver's default, SCRAM); ``tls`` (on when
    true, or when a TLS file is given), ``tls_ca_file``, ``tls_certificate_key_file`` (the client certificate
    and its key, PEM), ``tls_certificate_key_file_password`` (secret), ``tls_allow_invalid_hostnames``;
    ``replica_set``; ``direct_connection`` (``auto``: the driver decides); ``read_preference`` (of sources
    and lookups); ``write_concern`` (``auto``: ``majority`` where the server is a replica set member,
    ``1`` on a standalone; else ``majority``, a number of members >= 1 or a tag set name; ``0`` is refused,
    since an unacknowledged write cannot be acknowledged downstream), ``write_timeout`` (the write concern's
    wtimeout, 0: none) and ``journal``; ``max_pool_size`` and ``min_pool_size``;
    ``server_selection_timeout`` (how long an operation waits for a usable server before the link counts as
    gone), ``socket_timeout`` (0: none) and ``app_name`` (shown in the server's logs).

    ``connect()`` runs ``hello`` with these settings: the connection is ready once the deployment answered.
    Errors are classified (:meth:`classify`) as the SDK expects: network errors and ``NotWritablePrimary``
    are link failures, write concern errors, timeouts and retryable writes transient, validation and
    duplicate keys permanent.
    """

    ConfigDefaults: ClassVar[dict[str, Any]] = {
        "uri": "",
        "host": "localhost",
        "port": Int(27017, min=1, max=65535),
        "database": "",
        "username": "",
        "password": "",
        "auth_source": "",
        "auth_mechanism": Choice("", AUTH_MECHANISMS),
        "tls": False,
        "tls_ca_file": "",
        "tls_certificate_key_file": "",
        "tls_certificate_key_file_password": "",
        "tls_allow_invalid_hostnames": False,
        "replica_set": "",
        "direct_connection": Choice("auto", ("auto", "true", "false")),
        "read_preference": Choice("primary", tuple(READ_PREFERENCES)),
        "write_concern": "auto",
        "write_timeout": Seconds(0.0, min=0.0),
        "journal": Choice("auto", ("auto", "true", "false")),
        "max_pool_size": Int(100, min=1, max=100_000),
        "min_pool_size": Int(0, min=0, max=100_000),
        "server_selection_timeout": Seconds(10.0, min=0.01),
        "socket_timeout": Seconds(0.0, min=0.0),
        "app_name": "bspump",
    }

    def __init__(self, app: bspump.BSPumpApplication, connection_id: str | None = None,
                 config: Mapping[str, Any] | None = None) -> None:
        super().__init__(app, connection_id, config)
        self._client: AsyncMongoClient[Document] | None = None
        #: The replica set the server belongs to (``None``: standalone or mongos), known once connected.
        self.replica_set_name: str | None = None
        #: The largest document the server takes, in bytes (from ``hello``), known once connected.
        self.max_document_size = 16 * 1024 * 1024
        self.write_concern = WriteConcern(w=1)
        self.read_preference = READ_PREFERENCES[self.Config.getchoice("read_preference")]
        self.default_database = self.Config.get("database") or self._uri_database() or DEFAULT_DATABASE

    # -- configuration ----------------------------------------------------------------------------------------
    def _uri_database(self) -> str | None:
        uri = self.Config.get("uri")
        if not uri:
            return None
        try:
            return parse_uri(uri, validate=False, warn=True).get("database")
        except Exception:
            return None  # reported by preflight

    def preflight(self) -> None:
        """Checks the URI's syntax (without resolving ``mongodb+srv``), that the TLS files exist and that the
        write concern acknowledges writes; called by ``bspump check`` and before the application starts."""
        uri = self.Config.get("uri")
        if uri:
            if not uri.startswith(("mongodb://", "mongodb+srv://")):
                raise self.Config.error("uri", "expected a URI starting with mongodb:// or mongodb+srv://")
            if uri.startswith("mongodb://"):
                try:
                    parse_uri(uri, validate=True, warn=True)
                except Exception as exc:
                    raise self.Config.error("uri", f"not a valid MongoDB URI: {exc}") from None
        for key in ("tls_ca_file", "tls_certificate_key_file"):
            path = self.Config.getpath(key)
            if path and not os.path.isfile(path):
                raise self.Config.error(key, f"no such file: {path}")
        self._write_concern_value()

    def _write_concern_value(self) -> int | str | None:
        """The configured ``w`` (``None`` for ``auto``); raises a ConfigError naming the key when invalid."""
        text = str(self.Config.get("write_concern")).strip()
        if text == "auto":
            return None
        if text.isdigit():
            if int(text) == 0:
                raise self.Config.error("write_concern", "0 (unacknowledged) cannot be used: bspump acknowledges "
                                        "an event only once the server confirmed its write")
            return int(text)
        if not text:
            raise self.Config.error("write_concern", "expected auto, majority, a number >= 1 or a tag set name")
        return text

    def client_options(self) -> dict[str, Any]:
        """The keyword arguments of ``AsyncMongoClient`` built from the configuration (only the keys set)."""
        config = self.Config
        options: dict[str, Any] = {
            "appname": config.get("app_name") or None,
            "maxPoolSize": config.getint("max_pool_size"),
            "minPoolSize": config.getint("min_pool_size"),
            "serverSelectionTimeoutMS": int(config.getseconds("server_selection_timeout") * 1000),
            "connectTimeoutMS": int(config.getseconds("connect_timeout") * 1000) or None,
            "socketTimeoutMS": int(config.getseconds("socket_timeout") * 1000) or None,
            "document_class": dict,
            "tz_aware": True,
        }
        if not config.get("uri"):
            options["port"] = config.getint("port")
        for key, option in (("username", "username"), ("password", "password"), ("auth_source", "authSource"),
                            ("auth_mechanism", "authMechanism"), ("replica_set", "replicaSet"),
                            ("tls_certificate_key_file_password", "tlsCertificateKeyFilePassword")):
            if config.get(key):
                options[option] = config.get(key)
        for key, option in (("tls_ca_file", "tlsCAFile"), ("tls_certificate_key_file", "tlsCertificateKeyFile")):
            if config.getpath(key):
                options[option] = config.getpath(key)
                options["tls"] = True
        if config.getboolean("tls"):
            options["tls"] = True
        if config.getboolean("tls_allow_invalid_hostnames"):
            options["tlsAllowInvalidHostnames"] = True
        direct = config.getchoice("direct_connection")
        if direct != "auto":
            options["directConnection"] = direct == "true"
        return {k: v for k, v in options.items() if v is not None}

    # -- lifecycle --------------------------------------------------------------------------------------------
    async def connect(self) -> None:
        """Create the client and run ``hello``; decide the write concern (``auto``: majority on replica sets)."""
        target = self.Config.get("uri") or self.Config.get("host")
        client: AsyncMongoClient[Document] = AsyncMongoClient(target, **self.client_options())
        try:
            hello = await client.admin.command("hello")
        except BaseException:
            await client.close()
            raise
        self.replica_set_name = hello.get("setName")
        self.max_document_size = int(hello.get("maxBsonObjectSize", self.max_document_size))
        w = self._write_concern_value()
        if w is None:
            w = "majority" if self.replica_set_name or hello.get("msg") == "isdbgrid" else 1
        journal = self.Config.getchoice("journal")
        wtimeout = int(self.Config.getseconds("write_timeout") * 1000) or None
        self.write_concern = WriteConcern(w=w, wtimeout=wtimeout, j=None if journal == "auto" else journal == "true")
        self._client = client
        log.debug("connection %r: connected (replica set %r, write concern %r)", self.id, self.replica_set_name,
                  self.write_concern.document)

    async def disconnect(self) -> None:
        """Close the client and its pool."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def classify(self, error: BaseException) -> ErrorKind:
        """See :func:`bspump.mongodb.errors.classify_mongo_error`."""
        return classify_mongo_error(error)

    # -- what components use ----------------------------------------------------------------------------------
    @property
    def client(self) -> AsyncMongoClient[Document]:
        """The shared client; only while the connection is ready (components wait for that)."""
        client = self._client
        if client is None:
            raise ConnectionError(f"MongoDB connection {self.id!r} is not connected")
        return client

    def database(self, name: str | None = None) -> AsyncDatabase[Document]:
        """The database ``name`` (default: the connection's ``database``) with the connection's read
        preference and write concern."""
        return self.client.get_database(name or self.default_database, read_preference=self.read_preference,
                                        write_concern=self.write_concern)

    def collection(self, collection: str, database: str | None = None) -> AsyncCollection[Document]:
        """The collection ``collection`` of ``database`` (default: the connection's)."""
        return self.database(database)[collection]
