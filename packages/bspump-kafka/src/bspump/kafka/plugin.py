"""Registers the Kafka types as ``kafka.KafkaConnection``, ``kafka.KafkaSource`` and ``kafka.KafkaSink``."""

from __future__ import annotations

from bspump import hookimpl
from bspump.hookspecs import Register

from .connection import KafkaConnection
from .sink import KafkaSink
from .source import KafkaSource


@hookimpl
def register_connections(register: Register) -> None:
    register(KafkaConnection)


@hookimpl
def register_sources(register: Register) -> None:
    register(KafkaSource)


@hookimpl
def register_sinks(register: Register) -> None:
    register(KafkaSink)
