"""Registers the MongoDB types as ``mongodb.MongoDBConnection``, ``mongodb.MongoDBSource``,
``mongodb.MongoDBChangeStreamSource``, ``mongodb.MongoDBSink`` and ``mongodb.MongoDBLookup``."""

from __future__ import annotations

from bspump import hookimpl
from bspump.hookspecs import Register

from .change_stream import MongoDBChangeStreamSource
from .connection import MongoDBConnection
from .lookup import MongoDBLookup
from .sink import MongoDBSink
from .source import MongoDBSource


@hookimpl
def register_connections(register: Register) -> None:
    register(MongoDBConnection)


@hookimpl
def register_sources(register: Register) -> None:
    register(MongoDBSource)
    register(MongoDBChangeStreamSource)


@hookimpl
def register_sinks(register: Register) -> None:
    register(MongoDBSink)


@hookimpl
def register_lookups(register: Register) -> None:
    register(MongoDBLookup)
