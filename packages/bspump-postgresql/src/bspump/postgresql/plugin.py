"""Registers the PostgreSQL types as ``postgresql.PostgreSQLConnection``, ``postgresql.PostgreSQLSource``..."""

from __future__ import annotations

from bspump import hookimpl
from bspump.hookspecs import Register

from .cdc import PostgreSQLCDCSource
from .connection import PostgreSQLConnection
from .lookup import PostgreSQLLookup
from .notify import PostgreSQLNotifySource
from .sink import PostgreSQLSink
from .source import PostgreSQLSource


@hookimpl
def register_connections(register: Register) -> None:
    register(PostgreSQLConnection)


@hookimpl
def register_sources(register: Register) -> None:
    register(PostgreSQLCDCSource)
    register(PostgreSQLSource)
    register(PostgreSQLNotifySource)


@hookimpl
def register_sinks(register: Register) -> None:
    register(PostgreSQLSink)


@hookimpl
def register_lookups(register: Register) -> None:
    register(PostgreSQLLookup)
