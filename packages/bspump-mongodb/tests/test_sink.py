"""MongoDBSink: what each event becomes (no server: the requests are compared)."""

from __future__ import annotations

from typing import Any

import pytest
from bson.errors import InvalidDocument
from conftest import connection
from pymongo import DeleteOne, ReplaceOne, UpdateOne

import bspump
from bspump.config import ConfigError
from bspump.mongodb import MissingKeyError, MongoDBSink
from bspump.mongodb.sink import _without_values


def sink(app: bspump.BSPumpApplication, **config: Any) -> MongoDBSink:
    connection(app)
    pipeline = bspump.Pipeline(app, "P")
    return MongoDBSink(app, pipeline, config={"collection": "target", **config})


def test_collection_is_required(app: bspump.BSPumpApplication) -> None:
    connection(app)
    with pytest.raises(ConfigError, match="collection"):
        MongoDBSink(app, bspump.Pipeline(app, "P"))


def test_document_operations(app: bspump.BSPumpApplication) -> None:
    event = {"_id": 1, "sku": "a", "qty": 2}
    assert sink(app, operation="replace").request(event) == ReplaceOne({"_id": 1}, event, upsert=True)
    app2 = bspump.testing.make_app()
    assert sink(app2, operation="upsert", key="sku").request(event) == UpdateOne(
        {"sku": "a"}, {"$set": {"sku": "a", "qty": 2}}, upsert=True)
    app3 = bspump.testing.make_app()
    assert sink(app3, operation="update").request(event) == UpdateOne(
        {"_id": 1}, {"$set": {"sku": "a", "qty": 2}}, upsert=False)


def test_an_event_without_the_key_is_refused(app: bspump.BSPumpApplication) -> None:
    with pytest.raises(MissingKeyError, match="'sku'"):
        sink(app, operation="replace", key="sku").request({"_id": 1})


def test_change_events(app: bspump.BSPumpApplication) -> None:
    s = sink(app, events="change_events")
    key = {"_id": 5}
    assert s.request({"operationType": "insert", "documentKey": key, "fullDocument": {"_id": 5, "a": 1}}) == \
        ReplaceOne(key, {"_id": 5, "a": 1}, upsert=True)
    assert s.request({"operationType": "snapshot", "documentKey": key, "fullDocument": {"_id": 5}}) == \
        ReplaceOne(key, {"_id": 5}, upsert=True)
    assert s.request({"operationType": "update", "documentKey": key, "fullDocument": None, "updateDescription": {
        "updatedFields": {"a": 2}, "removedFields": ["b"], "truncatedArrays": []}}) == \
        UpdateOne(key, {"$set": {"a": 2}, "$unset": {"b": ""}})
    assert s.request({"operationType": "delete", "documentKey": key}) == DeleteOne(key)
    for notice in ("drop", "rename", "invalidate", "dropDatabase"):
        assert s.request({"operationType": notice}) is None
    with pytest.raises(MissingKeyError):
        s.request({"operationType": "delete"})


def test_encoder_errors_lose_the_value() -> None:
    error = InvalidDocument("cannot encode object: {'hunter2'}, of type: <class 'set'>")
    cleaned = _without_values(error)
    assert str(cleaned) == "cannot encode a value of type set as BSON"
