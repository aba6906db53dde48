"""Registers the MQTT types: ``mqtt.MQTTConnection``, ``mqtt.MQTTSource``, ``mqtt.MQTTSink``, ``mqtt.MQTTLookup``."""

from __future__ import annotations

from bspump import hookimpl
from bspump.hookspecs import Register

from .connection import MQTTConnection
from .lookup import MQTTLookup
from .sink import MQTTSink
from .source import MQTTSource


@hookimpl
def register_connections(register: Register) -> None:
    register(MQTTConnection)


@hookimpl
def register_sources(register: Register) -> None:
    register(MQTTSource)


@hookimpl
def register_sinks(register: Register) -> None:
    register(MQTTSink)


@hookimpl
def register_lookups(register: Register) -> None:
    register(MQTTLookup)
