"""What bspump.mqtt relies on inside aiomqtt and paho-mqtt (see bspump/mqtt/client.py).

These fail when a new aiomqtt or paho-mqtt release changes it: the paho client at ``aiomqtt.Client._client``,
paho's manual acknowledgement (``manual_ack_set``, ``ack``), CONNACK's flags reaching ``on_connect``, and
aiomqtt's ``queue_type`` receiving every message. The broker is a scripted one (tests/fake_broker.py), so
the tests see exactly which packets the client sends, and when.
"""

from __future__ import annotations

import asyncio
import inspect
import ssl
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
import pytest
from fake_broker import PUBACK, PUBCOMP, PUBLISH, SUBSCRIBE, FakeBroker

from bspump.mqtt import MQTTConnection
from bspump.mqtt.client import paho_client
from bspump.mqtt.inbox import Inbox
from bspump.mqtt.ledger import settle
from bspump.testing import make_app, wait_for


async def test_aiomqtt_wraps_a_paho_client_with_manual_ack() -> None:
    client = aiomqtt.Client("127.0.0.1", 1)
    inner = paho_client(client)
    assert isinstance(inner, paho.Client)
    assert callable(inner.manual_ack_set) and callable(inner.ack)
    assert list(inspect.signature(inner.ack).parameters) == ["mid", "qos"]
    # aiomqtt's own CONNACK handler takes (client, userdata, flags, reason_code, properties).
    assert len(inspect.signature(inner.on_connect).parameters) == 5
    # aiomqtt's socket callback, which ReadGate wraps, takes (client, userdata, sock).
    assert len(inspect.signature(inner.on_socket_open).parameters) == 3
    # Where aiomqtt keeps the error of a lost link (retrieved by discard_disconnect_error).
    assert isinstance(client._disconnected, asyncio.Future)


def _connection(port: int, protocol: str, **extra: Any) -> MQTTConnection:
    app = make_app()
    config = {"host": "127.0.0.1", "port": port, "protocol": protocol, "client_id": "unit", "keepalive": 60,
              **extra}
    return MQTTConnection(app, "MQTTConnection", config=config)


async def _accept(broker: FakeBroker, session_present: bool, qos: int) -> Any:
    """Answer the client's CONNECT and its SUBSCRIBE as a broker does; returns the CONNECT packet."""
    connect = await broker.read()
    broker.send(broker.connack(session_present=session_present))
    subscribe = await broker.read()
    assert subscribe.kind == SUBSCRIBE
    broker.send(broker.suback(subscribe.mid, [qos]))
    return connect


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_qos1_messages_are_acknowledged_only_when_settled_and_in_order(protocol: str) -> None:
    async with FakeBroker(v5=protocol == "5") as broker:
        connection = _connection(broker.port, protocol)
        inbox = Inbox("test", 100)
        connection.subscribe(("sensors/+",), 1, inbox)
        await connection.open()

        connect = await _accept(broker, session_present=True, qos=1)
        assert connect.kind == 1
        await connection.wait_ready(10)
        assert connection.session_present

        broker.send(broker.publish("sensors/a", b"first", 1, 7) + broker.publish("sensors/b", b"second", 1, 8))
        await wait_for(lambda: len(inbox) == 2, 10, what="two messages routed to the inbox")
        (first, first_receipt), (second, second_receipt) = inbox.take(10)
        assert (first.mid, first.payload, second.mid) == (7, b"first", 8)
        assert first_receipt is not None and second_receipt is not None

        # The second message settled first: nothing may be acknowledged yet (PUBACKs go in arrival order).
        settle([second_receipt])
        await connection.client.publish("marker/1", b"", qos=0)
        assert (await broker.read()).kind == PUBLISH, "a PUBACK was sent before its message was settled"

        settle([first_receipt])
        acks = [await broker.read(), await broker.read()]
        assert [(p.kind, p.mid) for p in acks] == [(PUBACK, 7), (PUBACK, 8)]
        await connection.close()


async def test_qos2_completion_waits_for_settling() -> None:
    async with FakeBroker(v5=True) as broker:
        connection = _connection(broker.port, "5")
        inbox = Inbox("test", 100)
        connection.subscribe(("q2/#",), 2, inbox)
        await connection.open()
        await _accept(broker, session_present=False, qos=2)
        await connection.wait_ready(10)
        assert not connection.session_present

        broker.send(broker.publish("q2/x", b"exactly", 2, 21))
        assert (await broker.read()).kind == 5  # PUBREC: paho sends it on receipt, as MQTT requires
        broker.send(broker.pubrel(21))
        await wait_for(lambda: len(inbox) == 1, 10, what="the QoS 2 message released")
        ((message, receipt),) = inbox.take(1)
        assert message.qos == 2 and receipt is not None
        await connection.client.publish("marker/2", b"", qos=0)
        assert (await broker.read()).kind == PUBLISH, "PUBCOMP was sent before the message was settled"
        settle([receipt])
        completion = await broker.read()
        assert (completion.kind, completion.mid) == (PUBCOMP, 21)
        await connection.close()


async def test_messages_of_no_subscription_are_acknowledged_so_they_block_nothing() -> None:
    async with FakeBroker(v5=True) as broker:
        connection = _connection(broker.port, "5")
        inbox = Inbox("test", 100)
        connection.subscribe(("wanted/#",), 1, inbox)
        await connection.open()
        await _accept(broker, session_present=True, qos=1)
        await connection.wait_ready(10)
        broker.send(broker.publish("stale/subscription", b"old", 1, 3))
        ack = await broker.read()
        assert (ack.kind, ack.mid) == (PUBACK, 3)
        assert connection.unrouted == 1 and len(inbox) == 0
        await connection.close()


async def test_reading_pauses_when_the_broker_ignores_receive_maximum() -> None:
    """A broker that sends more than receive_maximum unacknowledged messages (Mosquitto 2.0.11 does, once the
    client acknowledges): reading pauses, a trickle keeps bytes arriving for paho's keepalive, and reading
    resumes once the sink caught up."""
    async with FakeBroker(v5=True) as broker:
        connection = _connection(broker.port, "5", receive_maximum=5, keepalive=1)
        inbox = Inbox("test", 100)
        connection.subscribe(("flood/#",), 1, inbox)
        await connection.open()
        await _accept(broker, session_present=True, qos=1)
        await connection.wait_ready(10)

        broker.send(b"".join(broker.publish(f"flood/{mid}", b"m", 1, mid) for mid in range(1, 13)))
        await wait_for(lambda: connection.reads_paused == 1, 10, what="reading paused")
        assert len(inbox) == 6, "reading went on past receive_maximum"
        await wait_for(lambda: len(inbox) == 7, 5, what="one message read by the keepalive trickle")
        assert connection.ready

        taken = inbox.take(100)
        connection.acknowledge([receipt for _, receipt in taken if receipt is not None])
        acks = [await broker.read() for _ in taken]
        assert [(p.kind, p.mid) for p in acks] == [(PUBACK, mid) for mid in range(1, 8)]
        await wait_for(lambda: len(inbox) == 5, 10, what="the rest read after resuming")
        assert connection.reads_paused == 1
        await connection.close()


async def test_qos2_released_before_a_reconnect_is_completed_on_the_resumed_session() -> None:
    """A QoS 2 message released (PUBREL) on one link and acknowledged by the sink after a reconnect: its
    PUBCOMP goes out on the new link of the resumed session (else the broker keeps it, and its slot, for ever)."""
    async with FakeBroker(v5=True) as broker:
        connection = _connection(broker.port, "5", reconnect_initial=0.01, reconnect_jitter=0.0)
        inbox = Inbox("test", 100)
        connection.subscribe(("q2/#",), 2, inbox)
        await connection.open()
        await _accept(broker, session_present=True, qos=2)
        await connection.wait_ready(10)
        broker.send(broker.publish("q2/a", b"once", 2, 40))
        assert (await broker.read()).kind == 5  # PUBREC
        broker.send(broker.pubrel(40))
        await wait_for(lambda: len(inbox) == 1, 10, what="the QoS 2 message released")

        broker.drop()
        await broker.next_client()
        await _accept(broker, session_present=True, qos=2)  # the reconnect
        await wait_for(lambda: connection.ready and connection.connect_count == 2, 10, what="the reconnect")
        assert len(inbox) == 1, "an unread QoS 2 message was dropped: the broker will not send it again"

        ((message, receipt),) = inbox.take(1)
        assert message.payload == b"once" and receipt is not None
        connection.acknowledge([receipt])
        completion = await broker.read()
        assert (completion.kind, completion.mid) == (PUBCOMP, 40)
        await connection.close()


async def test_will_message_and_missing_session_warning(caplog: pytest.LogCaptureFixture) -> None:
    """The will message travels in CONNECT; a persistent session the broker did not resume is warned about."""
    async with FakeBroker(v5=True) as broker:
        connection = _connection(broker.port, "5", will_topic="status/pump-1", will_payload="offline",
                                 will_qos=1, will_retain=True)
        connection.subscribe(("in/#",), 1, Inbox("test", 10))
        await connection.open()
        connect = await _accept(broker, session_present=False, qos=1)
        assert b"status/pump-1" in connect.body and b"offline" in connect.body
        await connection.wait_ready(10)
        await connection.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("holds no session for client_id 'unit'" in w for w in warnings), warnings


async def test_tls_verifies_the_broker_unless_told_not_to() -> None:
    verifying = MQTTConnection(make_app(), "C", config={"tls": True})
    context = await verifying._tls()
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    trusting = MQTTConnection(make_app(), "C", config={"tls": True, "tls_verify": False})
    context = await trusting._tls()
    assert context.verify_mode is ssl.CERT_NONE and not context.check_hostname
