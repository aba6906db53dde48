"""The aiomqtt client as bspump needs it: acknowledgement left to the caller, CONNACK's session flag kept,
incoming messages routed as they are decoded.

aiomqtt 2.5 acknowledges every QoS 1/2 message as soon as paho decoded it and offers no switch for paho's
manual acknowledgement, nor does it keep CONNACK's ``session_present`` flag. Both live on the paho client
aiomqtt wraps, which it keeps in ``Client._client``: this module is the one place that reaches it. The
dependency range of aiomqtt and paho-mqtt is pinned in pyproject.toml, and ``tests/test_client_internals.py``
fails when either library changes what this relies on (the attribute, ``manual_ack_set``, ``ack``, and
the signatures of ``on_connect`` and ``on_socket_open``, and ``Client._disconnected``).

Incoming messages do not go through aiomqtt's message queue and its iterator (one task per message): the
queue class, which aiomqtt lets the caller choose, hands each message to a router function on arrival.

:class:`ReadGate` pauses reading the socket when the broker sends more than the client can hold (a broker that
ignores MQTT 5's receive maximum, as Mosquitto before 2.0.13 does once the client acknowledges, or any broker
under 3.1.1): TCP then holds the broker back. It reads a little every half keepalive meanwhile, because paho
closes a link on which nothing was received for a keepalive period; bytes arriving keep paho sending PINGREQs,
which keep the broker's side alive.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import aiomqtt
import paho.mqtt.client as paho

Router = Callable[[aiomqtt.Message], None]

log = logging.getLogger("bspump.mqtt")


def routing_queue(route: Router) -> type[asyncio.Queue[aiomqtt.Message]]:
    """A queue class for ``aiomqtt.Client(queue_type=...)`` whose ``put_nowait`` calls ``route`` instead of
    queueing: aiomqtt calls it from paho's read callback, on the event loop, once per decoded message."""

    class RoutingQueue(asyncio.Queue[aiomqtt.Message]):
        def put_nowait(self, item: aiomqtt.Message) -> None:
            route(item)

    return RoutingQueue


class SessionFlags:
    """What the broker said in CONNACK about the session (filled in when it arrives)."""

    __slots__ = ("connack_received", "session_present")

    def __init__(self) -> None:
        self.connack_received = False
        self.session_present = False


def paho_client(client: aiomqtt.Client) -> paho.Client:
    """The paho client inside ``client`` (see the module documentation for why and how this is guarded)."""
    return client._client  # noqa: SLF001 -- the one documented, tested reach into aiomqtt


def prepare(client: aiomqtt.Client, manual_ack: bool) -> SessionFlags:
    """Call before connecting: switch paho's manual acknowledgement on (QoS 1/2 messages are then
    acknowledged only by :func:`acknowledge`), and record CONNACK's session flag in the returned object."""
    inner = paho_client(client)
    inner.manual_ack_set(manual_ack)
    flags = SessionFlags()
    aiomqtt_on_connect: Any = inner.on_connect

    def on_connect(paho_self: paho.Client, userdata: Any, connect_flags: Any, reason_code: Any,
                   properties: Any = None) -> None:
        flags.connack_received = True
        flags.session_present = bool(connect_flags.session_present)
        aiomqtt_on_connect(paho_self, userdata, connect_flags, reason_code, properties)

    inner.on_connect = on_connect
    return flags


def discard_disconnect_error(client: aiomqtt.Client) -> None:
    """Mark the error of a lost link as seen: a client whose link dropped while nothing was iterating its
    messages would otherwise make asyncio print "Future exception was never retrieved" when it is freed."""
    disconnected = client._disconnected  # noqa: SLF001 -- see the module documentation
    if disconnected.done() and not disconnected.cancelled():
        disconnected.exception()


def acknowledge(client: aiomqtt.Client, mid: int, qos: int) -> None:
    """Send PUBACK (QoS 1) or PUBCOMP (QoS 2) for message ``mid``; a no-op once the client is disconnected."""
    paho_client(client).ack(mid, qos)


class ReadGate:
    """Pauses and resumes reading the socket of one aiomqtt client (see the module documentation).

    Install it before connecting (it learns the socket from paho's ``on_socket_open``). ``on_error`` is called
    with what reading raised after the gate took reading over (aiomqtt's own reader reports to its iterator).
    """

    def __init__(self, client: aiomqtt.Client, keepalive: float, on_error: Callable[[BaseException], None]) -> None:
        self._inner = paho_client(client)
        self._loop = asyncio.get_running_loop()
        self._interval = max(0.05, keepalive / 2)
        self._on_error = on_error
        self._fd = -1
        self._timer: asyncio.TimerHandle | None = None
        self.paused = False
        #: How often reading was paused.
        self.pauses = 0
        aiomqtt_on_socket_open: Any = self._inner.on_socket_open

        def on_socket_open(paho_self: paho.Client, userdata: Any, sock: Any) -> None:
            aiomqtt_on_socket_open(paho_self, userdata, sock)
            self._fd = sock.fileno()  # called in an executor thread: a plain store, read on the loop later

        self._inner.on_socket_open = on_socket_open

    def pause(self) -> None:
        """Stop reading (on the event loop), except for the keepalive trickle."""
        if self.paused or self._fd < 0:
            return
        self.paused = True
        self.pauses += 1
        self._loop.remove_reader(self._fd)
        self._timer = self._loop.call_later(self._interval, self._trickle)

    def resume(self) -> None:
        """Read again as data arrives."""
        if not self.paused:
            return
        self.paused = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._inner.socket() is not None:
            self._loop.add_reader(self._fd, self._read)

    def close(self) -> None:
        """The client is going away: stop the trickle."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.paused = False

    def _trickle(self) -> None:
        self._timer = None
        if not self.paused:
            return
        self._read()
        if self.paused and self._inner.socket() is not None:
            self._timer = self._loop.call_later(self._interval, self._trickle)

    def _read(self) -> None:
        inner = self._inner
        try:
            while True:
                inner.loop_read()
                sock = inner.socket()
                # An SSL socket may hold decrypted bytes that select() does not announce.
                pending = getattr(sock, "pending", None)
                if pending is not None and pending() > 0 and not self.paused:
                    continue
                break
        except Exception as exc:  # the link broke under the read: the connection reconnects
            self._on_error(exc)
