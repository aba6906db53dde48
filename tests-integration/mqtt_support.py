"""Helpers of the MQTT integration tests: plain aiomqtt clients that feed, prepare sessions and read back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def _client(host: str, port: int, identifier: str | None = None, *, persistent: bool = False,
            expiry: int = 300) -> aiomqtt.Client:
    properties = Properties(PacketTypes.CONNECT)
    if persistent:
        properties.SessionExpiryInterval = expiry
    return aiomqtt.Client(host, port, identifier=identifier or f"helper-{uuid.uuid4().hex[:12]}",
                          protocol=aiomqtt.ProtocolVersion.V5, clean_start=not persistent, properties=properties)


async def prepare_session(host: str, port: int, client_id: str, filters: Iterable[str], qos: int = 1,
                          expiry: int = 300) -> None:
    """Create the persistent session ``client_id`` with ``filters`` subscribed, then leave: the broker queues
    what is published to them until that client connects (as a source that ran before would have)."""
    async with _client(host, port, client_id, persistent=True, expiry=expiry) as client:
        await client.subscribe([(f, qos) for f in filters])


async def publish_all(host: str, port: int, messages: Iterable[tuple[str, bytes]], qos: int = 1,
                      retain: bool = False, window: int = 200) -> None:
    """Publish every ``(topic, payload)`` at ``qos``, ``window`` unconfirmed at a time, in order."""
    async with _client(host, port) as client:
        client.pending_calls_threshold = 1 << 30
        pending: set[asyncio.Task[None]] = set()
        for topic, payload in messages:
            if len(pending) >= window:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
            pending.add(asyncio.create_task(client.publish(topic, payload, qos=qos, retain=retain)))
        for task in asyncio.as_completed(pending):
            await task


async def retained(host: str, port: int, prefix: str, timeout: float = 20.0) -> dict[str, bytes]:
    """Every retained message under ``prefix`` (topic -> payload), as the broker stores them now.

    The broker queues the retained messages for a new subscription before it handles the client's next
    publication, so a marker published after SUBACK arrives after the last of them."""
    marker = f"{prefix}~end-{uuid.uuid4().hex}"
    found: dict[str, bytes] = {}
    async with _client(host, port) as client:
        await client.subscribe(f"{prefix}#", qos=1)
        await client.publish(marker, b"", qos=1)
        async with asyncio.timeout(timeout):
            async for message in client.messages:
                topic = message.topic.value
                if topic == marker:
                    return found
                if message.retain and isinstance(message.payload, bytes):
                    found[topic] = message.payload
    raise AssertionError("unreachable")


async def clear_retained(host: str, port: int, prefix: str) -> None:
    """Delete the retained messages under ``prefix`` (an empty retained payload deletes one)."""
    topics = list(await retained(host, port, prefix))
    if topics:
        await publish_all(host, port, ((topic, b"") for topic in topics), qos=1, retain=True)


class Collector:
    """A subscriber that records every message of ``filters`` (topic, payload) as it arrives; used as the far
    end of a pump whose sink publishes. Persistent, so that it misses nothing while the broker restarts."""

    def __init__(self, host: str, port: int, filters: list[str], qos: int = 1) -> None:
        self.host, self.port, self.filters, self.qos = host, port, filters, qos
        self.identifier = f"collector-{uuid.uuid4().hex[:12]}"
        self.messages: list[tuple[str, bytes]] = []
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def __aenter__(self) -> Collector:
        self._task = asyncio.create_task(self._run())
        async with asyncio.timeout(20):
            await self._subscribed.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                async with _client(self.host, self.port, self.identifier, persistent=True, expiry=600) as client:
                    await client.subscribe([(f, self.qos) for f in self.filters])
                    self._subscribed.set()
                    async for message in client.messages:
                        assert isinstance(message.payload, bytes)
                        self.messages.append((message.topic.value, message.payload))
            except aiomqtt.MqttError:
                await asyncio.sleep(0.2)  # the broker restarts: reconnect, the session kept what we missed


class ReliablePublisher:
    """Publishes ``count`` messages ``topic_prefix + str(n)`` (payload ``n``) at QoS 1, ``window`` unconfirmed
    at a time, ``pause`` seconds between windows; survives broker restarts by reconnecting and publishing
    again what was not confirmed (at least once, like any careful producer)."""

    def __init__(self, host: str, port: int, topic_prefix: str, count: int, window: int = 20,
                 pause: float = 0.0) -> None:
        self.host, self.port, self.topic_prefix = host, port, topic_prefix
        self.count, self.window, self.pause = count, window, pause
        self.confirmed = 0
        self.reconnects = 0

    async def run(self) -> None:
        next_n = 0
        while next_n < self.count:
            try:
                async with _client(self.host, self.port) as client:
                    client.pending_calls_threshold = 1 << 30
                    while next_n < self.count:
                        upto = min(next_n + self.window, self.count)
                        await asyncio.gather(*(client.publish(f"{self.topic_prefix}{n}", str(n).encode(), qos=1)
                                               for n in range(next_n, upto)))
                        next_n = upto
                        self.confirmed = upto
                        if self.pause:
                            await asyncio.sleep(self.pause)
            except aiomqtt.MqttError:
                self.reconnects += 1
                await asyncio.sleep(0.2)
