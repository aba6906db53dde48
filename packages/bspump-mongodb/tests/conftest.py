"""Unit tests of bspump-mongodb: no network, no servers (PyMongo's client connects lazily)."""

from __future__ import annotations

from typing import Any

import pytest

import bspump
import bspump.mongodb
from bspump.testing import make_app


@pytest.fixture
def app() -> bspump.BSPumpApplication:
    return make_app()


def connection(app: bspump.BSPumpApplication, **config: Any) -> bspump.mongodb.MongoDBConnection:
    conn = bspump.mongodb.MongoDBConnection(app, "MongoDBConnection", config=config)
    app.pump_service.add_connection(conn)
    return conn
