"""The plugin registers every public type."""

from __future__ import annotations

from typing import Any

import bspump.mongodb
from bspump.mongodb import plugin


def test_registers_every_type() -> None:
    registered: list[Any] = []
    plugin.register_connections(registered.append)
    plugin.register_sources(registered.append)
    plugin.register_sinks(registered.append)
    plugin.register_lookups(registered.append)
    assert registered == [bspump.mongodb.MongoDBConnection, bspump.mongodb.MongoDBSource,
                          bspump.mongodb.MongoDBChangeStreamSource, bspump.mongodb.MongoDBSink,
                          bspump.mongodb.MongoDBLookup]
