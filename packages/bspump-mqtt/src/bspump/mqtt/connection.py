"""MQTTConnection: one MQTT client session shared by the sources and sinks that name it."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import uuid
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

from .client import ReadGate, SessionFlags, acknowledge, discard_disconnect_error, prepare, routing_queue
from .inbox import Inbox
from .ledger import AckLedger, Receipt, settle

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
    """An MQTT broker and the client sessions on it shared by every :class:`MQTTSource` and :class:`MQTTSink`
    that names it (a subscriber for the sources, a publisher for the sinks; see the call order below).

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
      ``tls_keyfile`` (client certificate), ``tls_key_password`` (secret), ``tls_verify`` (on by default:
      the broker's certificate and host name are checked; off only for tests).
    - ``protocol``: ``5`` (default) or ``3.1.1``. ``keepalive``: seconds between PINGREQs when idle; the
      client keeps it up under backpressure (paho's loop runs regardless of the pipeline).
    - ``clean_start``: off by default, so that the broker keeps the session (subscriptions and QoS 1/2
      messages) while the pump is away; ``session_expiry`` (MQTT 5): how long the broker keeps it after a
      disconnect (3.1.1 sessions last until the broker drops them). At every connect the connection checks
      CONNACK's session-present flag and warns when a persistent session did not resume (first start of
      this client ID, session expired, broker lost it): messages published meanwhile are then lost.
    - ``receive_maximum``: QoS 1/2 messages received and not acknowledged yet, at most. Sources acknowledge
      only after their sink did, so this bounds what waits in memory behind a slow sink. MQTT 5 tells the
      broker (flow control); a broker that sends more anyway (3.1.1, or Mosquitto before 2.0.13, which
      loses count once messages are acknowledged) is held back by TCP: the connection stops reading until
      half of them were acknowledged, reading a packet every half ``keepalive`` so that the link stays up.
    - ``max_inflight``: QoS 1/2 publications the client sends before it waits for PUBACK/PUBREC.
    - ``will_topic``, ``will_payload``, ``will_qos``, ``will_retain``: the will message the broker
      publishes when this client vanishes without disconnecting (none when ``will_topic`` is empty).
    - ``timeout``: seconds to wait for CONNACK, SUBACK and a clean DISCONNECT.

    Call order: :meth:`connect` opens up to two clients: the subscriber (``client_id``, the persistent
    session) when a source subscribed, and the publisher when a sink publishes (``client_id`` + ``-pub``
    beside a subscriber, a clean session), so that a source held back by backpressure never delays the
    PUBACKs its sink waits for. It subscribes every source's filters again (subscriptions survive a
    reconnect, also when the broker lost the session) and watches both links; when one drops, the
    connection reconnects with backoff while its pipelines pause.
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
        self._wants_publisher = False
        self._subscriber: aiomqtt.Client | None = None
        self._publisher: aiomqtt.Client | None = None
        self._entered: list[aiomqtt.Client] = []
        self._gate: ReadGate | None = None
        self._receive_maximum = config.getint("receive_maximum")
        self._ledger = AckLedger(lambda mid, qos: None)
        self._ledger.close()
        self._lost: asyncio.Future[BaseException] | None = None
        self._watchers: list[asyncio.Task[None]] = []
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

    def publishes(self) -> None:
        """Say that a sink publishes through this connection; called when the sink is built."""
        self._wants_publisher = True

    @property
    def client(self) -> aiomqtt.Client:
        """The connected aiomqtt client that publishes (the publisher when a sink asked for one, else the
        subscriber); raises :class:`MQTTLinkError` while there is none."""
        client = self._publisher or self._subscriber
        if client is None or client not in self._entered:
            raise MQTTLinkError(f"MQTT connection {self.id!r} is not connected")
        return client

    def acknowledge(self, receipts: list[Receipt]) -> None:
        """Mark messages as processed: their PUBACK/PUBCOMP go out in arrival order (called by sources once
        their sink acknowledged them). Reading resumes once few enough messages are unacknowledged."""
        settle(receipts)
        subscriber = self._subscriber
        if self.session_present and subscriber is not None and subscriber in self._entered:
            for receipt in receipts:
                # A QoS 2 message released on an earlier link of this resumed session: the broker keeps it
                # (and its receive-maximum slot) until PUBCOMP, which only this session can send now.
                if receipt.qos == 2 and receipt.ledger.closed:
                    acknowledge(subscriber, receipt.mid, 2)
        gate = self._gate
        if gate is not None and gate.paused and len(self._ledger) <= self._receive_maximum // 2:
            gate.resume()

    async def short_lived_client(self, purpose: str) -> aiomqtt.Client:
        """A new, unconnected client with this connection's broker, credentials and TLS, a clean session and
        a client ID of its own (``client_id`` + ``-`` + ``purpose`` + a random suffix): for a lookup that
        reads retained messages now and then. The caller enters and leaves it (``async with``)."""
        tls_context = await self._tls() if self.Config.getboolean("tls") else None
        identifier = f"{self.client_id}-{purpose}-{uuid.uuid4().hex[:8]}"
        return self._make_client(identifier, False, tls_context, with_will=False, routed=False)

    @property
    def reads_paused(self) -> int:
        """How often reading was paused because the broker sent more than ``receive_maximum``."""
        return self._gate.pauses if self._gate is not None else 0

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
        """Open the subscriber client (when a source subscribed, or nothing publishes) and the publisher
        client (when a sink publishes), so that a source paused by backpressure never holds back the PUBACKs
        a sink waits for; subscribe every source's filters and watch both links."""
        tls_context = await self._tls() if self.Config.getboolean("tls") else None
        subscribing = bool(self._subscriptions) or not self._wants_publisher
        self._lost = asyncio.get_running_loop().create_future()
        if subscribing:
            subscriber = self._make_client(self.client_id, self.persistent, tls_context, with_will=True)
            flags = prepare(subscriber, manual_ack=True)
            self._gate = ReadGate(subscriber, self.Config.getseconds("keepalive"), self._read_failed)
            self._ledger = AckLedger(lambda mid, qos: acknowledge(subscriber, mid, qos))
            self._subscriber = subscriber
            await self._enter(subscriber)
            self._check_session(flags)
            for subscription in self._subscriptions:
                await self._subscribe(subscriber, subscription)
        if self._wants_publisher:
            # Beside a subscriber it is a session of its own: a clean one (unconfirmed publications are the
            # sink's to resend), under a client ID derived from the subscriber's.
            identifier = f"{self.client_id}-pub" if subscribing else self.client_id
            publisher = self._make_client(identifier, self.persistent and not subscribing, tls_context,
                                          with_will=not subscribing)
            # Publications wait for their PUBACK as aiomqtt "pending calls"; a sink keeps many in flight.
            publisher.pending_calls_threshold = 1 << 30
            self._publisher = publisher
            await self._enter(publisher)
        for client in self._entered:
            self._watchers.append(asyncio.create_task(self._watch(client, self._lost), name=f"mqtt-watch:{self.id}"))

    async def disconnect(self) -> None:
        watchers, self._watchers = self._watchers, []
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        self._ledger.close()
        if self._gate is not None:
            self._gate.close()
        lost, self._lost = self._lost, None
        if lost is not None and not lost.done():
            lost.set_result(MQTTLinkError(f"MQTT connection {self.id!r} disconnected"))
        entered, self._entered = self._entered, []
        self._subscriber = self._publisher = None
        for client in entered:
            try:
                async with asyncio.timeout(self.timeout):
                    await client.__aexit__(None, None, None)
            except (aiomqtt.MqttError, TimeoutError) as exc:
                log.debug("connection %r: DISCONNECT not confirmed (%s); the socket is dropped", self.id, exc)
            discard_disconnect_error(client)

    def _make_client(self, identifier: str, persistent: bool, tls_context: ssl.SSLContext | None,
                     with_will: bool, routed: bool = True) -> aiomqtt.Client:
        config = self.Config
        v5 = self.protocol == "5"
        properties: Properties | None = None
        if v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.ReceiveMaximum = self._receive_maximum
            if persistent:
                properties.SessionExpiryInterval = int(config.getseconds("session_expiry"))
        will = None
        if with_will and config.get("will_topic"):
            will = aiomqtt.Will(str(config.get("will_topic")), str(config.get("will_payload") or "").encode(),
                                config.getint("will_qos"), config.getboolean("will_retain"))
        return aiomqtt.Client(
            self.host,
            self.port,
            username=str(config.get("username") or "") or None,
            password=str(config.get("password") or "") or None,
            identifier=identifier,
            # Routed: messages go to the sources' inboxes; else to aiomqtt's queue, for the caller to read.
            queue_type=routing_queue(self._route) if routed else None,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            will=will,
            clean_session=None if v5 else not persistent,
            # paho accepts clean_start only for MQTT 5 (3.1.1 has clean_session); its default means "unset".
            clean_start=(not persistent) if v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
            keepalive=max(1, round(config.getseconds("keepalive"))),
            timeout=self.timeout,
            max_inflight_messages=config.getint("max_inflight"),
            properties=properties,
            tls_context=tls_context,
            tls_insecure=None if tls_context is None else not config.getboolean("tls_verify"),
        )

    async def _enter(self, client: aiomqtt.Client) -> None:
        try:
            await client.__aenter__()
        except aiomqtt.MqttError as exc:
            raise _connect_error(exc) from None
        self._entered.append(client)

    def _read_failed(self, error: BaseException) -> None:
        lost = self._lost
        if lost is None or lost.done():
            return
        link_error = MQTTLinkError(f"link to the MQTT broker lost: {error}")
        lost.set_result(link_error)
        self.report_failure(link_error)

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
            if receipt is not None and len(self._ledger) > self._receive_maximum:
                self._pause_reading()
            return
        self.unrouted += 1
        if self.unrouted == 1 or self.unrouted % 10000 == 0:
            log.warning("connection %r: %d messages matched no source's subscription (the session may hold "
                        "an old subscription); they were acknowledged and dropped, last on topic %r",
                        self.id, self.unrouted, topic)
        if receipt is not None:
            self.acknowledge([receipt])

    def _pause_reading(self) -> None:
        """The broker sent more unacknowledged messages than ``receive_maximum`` allows (it ignores the
        limit, or the protocol is 3.1.1): let TCP hold it back until the sinks caught up."""
        gate = self._gate
        if gate is None or gate.paused:
            return
        if gate.pauses == 0:
            log.warning("connection %r: the broker sent more than receive_maximum = %d unacknowledged messages; "
                        "reading pauses while that many wait (Mosquitto before 2.0.13 ignores the limit once "
                        "messages are acknowledged)", self.id, self._receive_maximum)
        gate.pause()

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
        if lost.done():
            return  # the other client's watcher (or a failed read) reported this outage already
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
