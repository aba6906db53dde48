"""Smoke: MQTT with aiomqtt (QoS 1), and a broker restart through ``server_control``."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import aiomqtt
import pytest

# Types only: "conftest" is no unique module name to import at run time.
if TYPE_CHECKING:
    from conftest import Address, ServerControl

pytestmark = [pytest.mark.smoke, pytest.mark.mqtt]


async def _round_trip(address: Address, prefix: str, count: int) -> list[str]:
    async with aiomqtt.Client(
        address.host, address.port, identifier=f"{prefix}sub"
    ) as client:
        await client.subscribe(f"{prefix}#", qos=1)
        for i in range(count):
            await client.publish(f"{prefix}t/{i}", payload=f"p{i}".encode(), qos=1)
        got: list[str] = []
        async with asyncio.timeout(10):
            async for message in client.messages:
                assert message.qos == 1
                got.append(f"{message.topic}={message.payload!r}")
                if len(got) == count:
                    break
        return got


async def test_qos1_pub_sub(mqtt_address: Address, mqtt_topic_prefix: str) -> None:
    got = await _round_trip(mqtt_address, mqtt_topic_prefix, 10)
    assert got == [f"{mqtt_topic_prefix}t/{i}=b'p{i}'" for i in range(10)]


@pytest.mark.server_control
async def test_restart_broker_from_fixture(
    mqtt_address: Address, mqtt_topic_prefix: str, server_control: ServerControl
) -> None:
    assert len(await _round_trip(mqtt_address, mqtt_topic_prefix, 3)) == 3
    await asyncio.to_thread(server_control.restart, "mosquitto")
    # The broker is back and answering; a fresh connection works again.
    assert len(await _round_trip(mqtt_address, mqtt_topic_prefix, 3)) == 3
