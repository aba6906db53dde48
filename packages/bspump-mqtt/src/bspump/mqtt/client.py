"""The aiomqtt client as bspump needs it: acknowledgement left to the caller, CONNACK's session flag kept,
incoming messages routed as they are decoded.

aiomqtt 2.5 acknowledges every QoS 1/2 message as soon as paho decoded it and offers no switch for paho's
manual acknowledgement, nor does it keep CONNACK's ``session_present`` flag. Both live on the paho client
aiomqtt wraps, which it keeps in ``Client._client``: this module is the one place that reaches it. The
dependency range of aiomqtt and paho-mqtt is pinned in pyproject.toml, and ``tests/test_client_internals.py``
fails when either library changes what this relies on (the attribute, ``manual_ack_set``, ``ack``, and
the signature of ``on_connect``).

Incoming messages do not go through aiomqtt's message queue and its iterator (one task per message): the
queue class, which aiomqtt lets the caller choose, hands each message to a router function on arrival.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiomqtt
import paho.mqtt.client as paho

Router = Callable[[aiomqtt.Message], None]


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


def acknowledge(client: aiomqtt.Client, mid: int, qos: int) -> None:
    """Send PUBACK (QoS 1) or PUBCOMP (QoS 2) for message ``mid``; a no-op once the client is disconnected."""
    paho_client(client).ack(mid, qos)
