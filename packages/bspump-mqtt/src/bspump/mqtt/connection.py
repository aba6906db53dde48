"""MQTTConnection: one MQTT client session shared by the sources and sinks that name it."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import aiomqtt
import paho.mqtt.client as paho
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

import bspump
from bspump.config import Choice, Int, Seconds
from bspump.failures import ErrorKind

from .client import SessionFlags, acknowledge, prepare, routing_queue
from .inbox import Inbox
from .ledger import AckLedger, settle

if TYPE_CHECKING:
    from bspump import BSPumpApplication

log = logging.getLogger("bspump.mqtt")

PROTOCOLS = ("5", "3.1.1")
#: paho's result codes that mean the link is gone (anything else about a publish is the message's fault).
_LINK_CODES = frozenset({
    paho.MQTT_ERR_NO_CONN, paho.MQTT_ERR_CONN_REFUSED, paho.MQTT_ERR_CONN_LOST, paho.MQTT_ERR_KEEPALIVE,
    paho.MQTT_ERR_TLS, paho.MQTT_ERR_ERRNO, paho.MQTT_ERR_PROTOCOL,
})
_TRANSIENT_CODES = frozenset({paho.MQTT_ERR_NOMEM, paho.MQTT_ERR_QUEUE_SIZE, paho.MQTT_ERR_AGAIN})
#: Topics remembered per connection with the inbox they go to (the cache is emptied when it grows past this).
_ROUTE_CACHE_SIZE = 10_000


class MQTTLinkError(ConnectionError):
    """The MQTT client is not connected (between a lost link and the reconnect)."""


@dataclass(frozen=True, slots=True)
class Subscription:
    """What one source subscribed to: topic filters (``$share/GROUP/filter`` included) at one QoS."""

    filters: tuple[str, ...]
    qos: int
    inbox: Inbox
    wildcards: tuple[aiomqtt.Wildcard, ...]


class MQTTConnection(bspump.Connection):
    """An MQTT broker and one client session on it, shared by every :class:`MQTTSource` and
    :class:`MQTTSink` that names it (one network connection, one client ID).

    Configured in ``[connection:ID]``::

        [connection:MQTTConnection]
        host = broker.example.com
        port = 8883
        client_id = pump-eu-1
        username = pump
        password = ${MQTT_PASSWORD}
        tls = yes
        tls_cafile = /etc/ssl/broker-ca.pem

    Keys:

    - ``host``, ``port``: the broker. ``client_id``: the session's identity; with a persistent session it
      must be the same on every start of this process and differ between processes (the default,
      ``bspump-HOSTNAME-CONNECTIONID``, is stable but the same for two processes on one host).
    - ``username``, ``password`` (secret): credentials.
    - ``tls`` (off by default), ``tls_cafile`` (CA bundle; the system's when empty), ``tls_certfile`` and
      ``tls_keyfile`` (client certificate), ``tls_key_password`` (secret), ``tls_verify`` (on by default: the broker's
      certificate and host name are checked; off only for tests).
    - ``protocol``: ``5`` (default) or ``3.1.1``. ``keepalive``: seconds between PINGREQs when idle; the
      client keeps it up under backpressure (paho's loop runs regardless of the pipeline).
    - ``clean_start``: off by default, so that the broker keeps the session (subscriptions and QoS 1/2
      messages) while the pump is away; ``session_expiry`` (MQTT 5): how long the broker keeps it after a
      disconnect (3.1.1 sessions last until the broker drops them). At every connect the connection checks
      CONNACK's session-present flag and warns when a persistent session did not resume (first start of
      this client ID, session expired, broker lost it): messages published meanwhile are then lost.
    - ``receive_maximum`` (MQTT 5): QoS 1/2 messages the broker sends before it waits for acknowledgements.
      Sources acknowledge only after their sink did, so this bounds what waits in memory behind a slow sink
      (under 3.1.1 the broker's own in-flight limit does, e.g. Mosquitto's ``max_inflight_messages``).
    - ``max_inflight``: QoS 1/2 publications the client sends before it waits for PUBACK/PUBREC.
    - ``will_topic``, ``will_payload``, ``will_qos``, ``will_retain``: the will message the broker
      publishes when this client vanishes without disconnecting (none when ``will_topic`` is empty).
    - ``timeout``: seconds to wait for CONNACK, SUBACK and a clean DISCONNECT.

    Call order: :meth:`connect` creates the client, subscribes every source's filters again (so
    subscriptions survive a reconnect, also when the broker lost the session) and starts watching the
    link; when the link drops, the connection reconnects with backoff while its pipelines pause.
    Sources register their subscriptions when they are built (:meth:`subscribe`), so that messages of a
    resumed session, which arrive right after CONNACK, find their source.
    """

    ConfigDefaults: ClassVar[dict[str, Any]] = {
        "host": "localhost",
        "port": Int(1883, min=1, max=65535),
        "client_id": "",
        "username": "",
        "password": "",
        "tls": False,
        "tls_cafile": "",
        "tls_certfile": "",
        "tls_keyfile": "",
        "tls_key_password": "",
        "tls_verify": True,
        "protocol": Choice("5", PROTOCOLS, aliases={"v5": "5", "5.0": "5", "v3.1.1": "3.1.1", "311": "3.1.1"}),
        "keepalive": Seconds(60.0, min=1.0, max=65535.0),
        "clean_start": False,
        "session_expiry": Seconds(3600.0, min=0.0, max=4294967295.0),
        "receive_maximum": Int(1000, min=1, max=65535),
        "max_inflight": Int(1000, min=1, max=65535),
        "will_topic": "",
        "will_payload": "",
        "will_qos": Int(0, min=0, max=2),
        "will_retain": False,
        "timeout": Seconds(10.0, min=0.1, max=3600.0),
    }

    def __init__(
        self,
        app: BSPumpApplication,
        connection_id: str | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(app, connection_id, config=config)
        config = self.Config
        self.host = str(config.get("host"))
        self.port = config.getint("port")
        self.client_id = str(config.get("client_id") or "") or f"bspump-{socket.gethostname()}-{self.id}"
        self.protocol = config.getchoice("protocol")
        self.persistent = not config.getboolean("clean_start")
        self.timeout = config.getseconds("timeout")
        #: Whether the broker resumed a stored session at the last connect (CONNACK's session-present flag).
        self.session_present = False
        #: Messages that matched no source's subscription (acknowledged, so that they block nothing).
        self.unrouted = 0
        self._subscriptions: list[Subscription] = []
        self._routes: dict[str, Inbox | None] = {}
        self._client: aiomqtt.Client | None = None
        self._entered = False
        self._ledger = AckLedger(lambda mid, qos: None)
        self._ledger.close()
        self._lost: asyncio.Future[BaseException] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._tls_context: ssl.SSLContext | None = None
        if self.protocol == "3.1.1" and self.persistent and config.get("session_expiry") != 3600.0:
            log.info("connection %r: session_expiry applies to MQTT 5 only; a 3.1.1 session lasts until the "
                     "broker drops it", self.id)

    # -- what sources and sinks use --------------------------------------------------------------------------
    def subscribe(self, filters: tuple[str, ...], qos: int, inbox: Inbox) -> None:
        """Register a source's topic filters; called when the source is built. They are subscribed at every
        connect, and messages matching them go to ``inbox``."""
        wildcards = tuple(aiomqtt.Wildcard(f) for f in filters)
        self._subscriptions.append(Subscription(filters, qos, inbox, wildcards))
        self._routes.clear()

    @property
    def client(self) -> aiomqtt.Client:
        """The connected aiomqtt client; raises :class:`MQTTLinkError` while there is none."""
        client = self._client
        if client is None or not self._entered:
            raise MQTTLinkError(f"MQTT connection {self.id!r} is not connected")
        return client

    @property
    def lost(self) -> asyncio.Future[BaseException]:
        """Resolves (with the error) when the current client's link is gone; a sink races its
        confirmations against it, so that publications in flight fail at once instead of hanging."""
        lost = self._lost
        if lost is None:
            raise MQTTLinkError(f"MQTT connection {self.id!r} is not connected")
        return lost

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def preflight(self) -> None:
        config = self.Config
        for key in ("tls_cafile", "tls_certfile", "tls_keyfile"):
            path = str(config.get(key) or "")
            if path and not os.path.isfile(path):
                raise config.error(key, f"file {path} does not exist")
        if config.get("tls_keyfile") and not config.get("tls_certfile"):
            raise config.error("tls_keyfile", "is set without tls_certfile (the client certificate it belongs to)")

    async def connect(self) -> None:
        config = self.Config
        tls_context = await self._tls() if config.getboolean("tls") else None
        v5 = self.protocol == "5"
        properties: Properties | None = None
        if v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.ReceiveMaximum = config.getint("receive_maximum")
            if self.persistent:
                properties.SessionExpiryInterval = int(config.getseconds("session_expiry"))
        will = None
        if config.get("will_topic"):
            will = aiomqtt.Will(str(config.get("will_topic")), str(config.get("will_payload") or "").encode(),
                                config.getint("will_qos"), config.getboolean("will_retain"))
        client = aiomqtt.Client(
            self.host,
            self.port,
            username=str(config.get("username") or "") or None,
            password=str(config.get("password") or "") or None,
            identifier=self.client_id,
            queue_type=routing_queue(self._route),
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            will=will,
            clean_session=None if v5 else not self.persistent,
            # paho accepts clean_start only for MQTT 5 (3.1.1 has clean_session); its default means "unset".
            clean_start=(not self.persistent) if v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
            keepalive=max(1, round(config.getseconds("keepalive"))),
            timeout=self.timeout,
            max_inflight_messages=config.getint("max_inflight"),
            properties=properties,
            tls_context=tls_context,
            tls_insecure=None if tls_context is None else not config.getboolean("tls_verify"),
        )
        # Publications wait for their PUBACK as aiomqtt "pending calls"; a sink keeps many in flight on purpose.
        client.pending_calls_threshold = 1 << 30
        flags = prepare(client, manual_ack=True)
        ledger = AckLedger(lambda mid, qos: acknowledge(client, mid, qos))
        self._ledger, self._client = ledger, client
        try:
            await client.__aenter__()
        except aiomqtt.MqttError as exc:
            raise _connect_error(exc) from None
        self._entered = True
        self._lost = asyncio.get_running_loop().create_future()
        self._check_session(flags)
        for subscription in self._subscriptions:
            await self._subscribe(client, subscription)
        self._watcher = asyncio.create_task(self._watch(client, self._lost), name=f"mqtt-watch:{self.id}")

    async def disconnect(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        self._ledger.close()
        lost, self._lost = self._lost, None
        if lost is not None and not lost.done():
            lost.set_result(MQTTLinkError(f"MQTT connection {self.id!r} disconnected"))
        client, self._client = self._client, None
        entered, self._entered = self._entered, False
        if client is None or not entered:
            return
        try:
            async with asyncio.timeout(self.timeout):
                await client.__aexit__(None, None, None)
        except (aiomqtt.MqttError, TimeoutError) as exc:
            log.debug("connection %r: DISCONNECT not confirmed (%s); the socket is dropped", self.id, exc)

    def classify(self, error: BaseException) -> ErrorKind:
        """aiomqtt's errors: a lost or refused link is ``LINK``; a full client queue or a timed-out operation
        ``TRANSIENT``; a message the client refuses (invalid topic, payload too large) ``PERMANENT``."""
        if isinstance(error, MQTTLinkError):
            return ErrorKind.LINK
        if isinstance(error, aiomqtt.MqttCodeError):
            code = error.rc
            if isinstance(code, int) and not isinstance(error, MqttConnectError):
                if code in _TRANSIENT_CODES:
                    return ErrorKind.TRANSIENT
                if code in _LINK_CODES:
                    return ErrorKind.LINK
                if code in (paho.MQTT_ERR_PAYLOAD_SIZE, paho.MQTT_ERR_INVAL, paho.MQTT_ERR_ACL_DENIED):
                    return ErrorKind.PERMANENT
            return ErrorKind.LINK
        if isinstance(error, aiomqtt.MqttError):
            return ErrorKind.TRANSIENT if "timed out" in str(error) else ErrorKind.LINK
        if isinstance(error, ValueError | TypeError | UnicodeError):
            return ErrorKind.PERMANENT  # paho refuses the topic or payload of this message
        return super().classify(error)

    # -- internals ---------------------------------------------------------------------------------------------
    async def _tls(self) -> ssl.SSLContext:
        if self._tls_context is None:
            self._tls_context = await asyncio.to_thread(self._build_tls_context)
        return self._tls_context

    def _build_tls_context(self) -> ssl.SSLContext:
        config = self.Config
        context = ssl.create_default_context(cafile=str(config.get("tls_cafile") or "") or None)
        cert = str(config.get("tls_certfile") or "")
        if cert:
            context.load_cert_chain(cert, str(config.get("tls_keyfile") or "") or None,
                                    str(config.get("tls_key_password") or "") or None)
        if not config.getboolean("tls_verify"):
            log.warning("connection %r: tls_verify is off: the broker's certificate is not checked", self.id)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _check_session(self, flags: SessionFlags) -> None:
        self.session_present = flags.session_present
        if not self.persistent:
            return
        if flags.session_present:
            dropped = sum(s.inbox.forget_resent() for s in self._subscriptions)
            if dropped:
                log.debug("connection %r: %d unread messages of the previous link are resent by the broker",
                          self.id, dropped)
            return
        log.warning("connection %r: the broker holds no session for client_id %r (expected on its first start; "
                    "otherwise the session expired or the broker lost it): messages published while this "
                    "client was away are not delivered", self.id, self.client_id)

    async def _subscribe(self, client: aiomqtt.Client, subscription: Subscription) -> None:
        granted = await client.subscribe([(f, subscription.qos) for f in subscription.filters])
        codes = [code.value if isinstance(code, ReasonCode) else code for code in granted]
        for topic_filter, value in zip(subscription.filters, codes, strict=False):
            if value >= 0x80:
                raise MQTTSubscribeError(f"the broker refused the subscription to {topic_filter!r} "
                                         f"(reason code {value:#x})")
            if value < subscription.qos:
                log.warning("connection %r: the broker granted QoS %d, not %d, for %r", self.id, value,
                            subscription.qos, topic_filter)

    def _route(self, message: aiomqtt.Message) -> None:
        """Called by the client for each message as it is decoded."""
        receipt = self._ledger.received(message.mid, message.qos) if message.qos else None
        topic = message.topic.value
        routes = self._routes
        try:
            inbox = routes[topic]
        except KeyError:
            inbox = self._match(message.topic)
            if len(routes) >= _ROUTE_CACHE_SIZE:
                routes.clear()
            routes[topic] = inbox
        if inbox is not None:
            inbox.put(message, receipt)
            return
        self.unrouted += 1
        if self.unrouted == 1 or self.unrouted % 10000 == 0:
            log.warning("connection %r: %d messages matched no source's subscription (the session may hold "
                        "an old subscription); they were acknowledged and dropped, last on topic %r",
                        self.id, self.unrouted, topic)
        if receipt is not None:
            settle((receipt,))

    def _match(self, topic: aiomqtt.Topic) -> Inbox | None:
        for subscription in self._subscriptions:
            if any(topic.matches(wildcard) for wildcard in subscription.wildcards):
                return subscription.inbox
        return None

    async def _watch(self, client: aiomqtt.Client, lost: asyncio.Future[BaseException]) -> None:
        """Waits for the link to drop (aiomqtt's iterator raises then; messages never queue there), then
        reports it so that the connection reconnects."""
        error: BaseException
        try:
            async for _ in client.messages:
                pass
            error = MQTTLinkError("the MQTT client stopped")
        except aiomqtt.MqttError as exc:
            error = MQTTLinkError(f"link to the MQTT broker lost: {exc.__cause__ or exc}")
        if not lost.done():
            lost.set_result(error)
        if self.state is not bspump.ConnectionState.READY:
            await self.wait_ready()  # dropped while connect() was finishing: report it once the base is ready
        self.report_failure(error)


class MQTTSubscribeError(aiomqtt.MqttError):
    """The broker refused a subscription (a filter it does not allow, or shared subscriptions unsupported)."""


def _connect_error(error: aiomqtt.MqttError) -> BaseException:
    """aiomqtt reports a refused TCP connect as a bare MqttError; make it a ConnectionError so that logs and
    classification say what it is."""
    if isinstance(error, MqttConnectError):
        return error
    return MQTTLinkError(f"cannot connect to the MQTT broker: {error}")
