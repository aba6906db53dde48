"""Registers the Elasticsearch types as ``elasticsearch.ElasticSearchConnection``, ``...Sink`` and ``...Source``."""

from __future__ import annotations

from bspump import hookimpl
from bspump.hookspecs import Register

from .connection import ElasticSearchConnection
from .sink import ElasticSearchSink
from .source import ElasticSearchSource


@hookimpl
def register_connections(register: Register) -> None:
    register(ElasticSearchConnection)


@hookimpl
def register_sources(register: Register) -> None:
    register(ElasticSearchSource)


@hookimpl
def register_sinks(register: Register) -> None:
    register(ElasticSearchSink)
