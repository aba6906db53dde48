"""Registers the Elasticsearch types: ``elasticsearch.ElasticSearchConnection``, ``...Sink``, ``...Source``,
``...Lookup``."""

from __future__ import annotations

from bspump import hookimpl
from bspump.hookspecs import Register

from .connection import ElasticSearchConnection
from .lookup import ElasticSearchLookup
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


@hookimpl
def register_lookups(register: Register) -> None:
    register(ElasticSearchLookup)
