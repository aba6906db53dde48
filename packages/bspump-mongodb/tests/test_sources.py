"""The sources' configuration: start times, watch scopes, the checkpoint collection filtered out, resumable
queries."""

from __future__ import annotations

from typing import Any

import bson
import pytest
from bson import Binary, ObjectId, Timestamp
from conftest import connection

import bspump
from bspump.config import ConfigError
from bspump.mongodb import MongoDBChangeStreamSource, MongoDBCheckpointStore, MongoDBSource
from bspump.mongodb.options import dump_bson, load_bson


def stream(app: bspump.BSPumpApplication, **config: Any) -> MongoDBChangeStreamSource:
    connection(app, database="shop")
    return MongoDBChangeStreamSource(app, bspump.Pipeline(app, "P"), config=config)


def test_start_at_accepts_iso_and_epoch(app: bspump.BSPumpApplication) -> None:
    assert stream(app, collection="c", start_at="2026-11-30T06:00:00Z").start_at == Timestamp(1796018400, 0)
    other = bspump.testing.make_app()
    assert stream(other, collection="c", start_at="1796018400").start_at == Timestamp(1796018400, 0)


def test_start_at_refuses_other_text(app: bspump.BSPumpApplication) -> None:
    with pytest.raises(ConfigError, match="start_at"):
        stream(app, collection="c", start_at="yesterday")


def test_watching_a_collection_needs_one(app: bspump.BSPumpApplication) -> None:
    with pytest.raises(ConfigError, match="collection"):
        stream(app)


def test_a_database_watch_leaves_out_the_checkpoint_collection(app: bspump.BSPumpApplication) -> None:
    source = stream(app, watch="database", pipeline='[{"$match": {"operationType": "insert"}}]')
    stages = source.stream_pipeline()
    assert stages[0] == {"$match": {"$or": [{"ns.db": {"$ne": "shop"}}, {"ns.coll": {"$ne": "bspump_checkpoints"}}]}}
    assert stages[1] == {"$match": {"operationType": "insert"}}
    store = source.checkpoint_store()
    assert isinstance(store, MongoDBCheckpointStore)
    assert "shop.bspump_checkpoints" in repr(store)


def test_a_file_checkpoint_store_needs_no_filter(app: bspump.BSPumpApplication) -> None:
    source = stream(app, watch="deployment", checkpoint_store="file")
    assert source.stream_pipeline() == []
    assert source.checkpoint_store() is app.checkpoints


def test_a_pipeline_that_is_not_a_list_is_refused(app: bspump.BSPumpApplication) -> None:
    with pytest.raises(ConfigError, match="pipeline"):
        stream(app, collection="c", pipeline='{"$match": {}}')


def test_resume_tokens_keep_every_bson_type() -> None:
    token = {"_data": "82ABCDEF", "_typeBits": Binary(b"\x81\x02")}
    assert bson.encode(load_bson(dump_bson(token))) == bson.encode(token)  # the bytes the server gets back
    oid = ObjectId()
    assert load_bson(dump_bson(oid)) == oid


def query(app: bspump.BSPumpApplication, **config: Any) -> MongoDBSource:
    connection(app)
    return MongoDBSource(app, bspump.Pipeline(app, "P"), config={"collection": "events", **config})


def test_a_resumable_query_reads_past_the_last_document(app: bspump.BSPumpApplication) -> None:
    source = query(app, filter='{"kind": "a"}', projection='{"kind": 1}')
    assert source.query() == {"kind": "a"}
    assert source.sort == [("_id", 1)] and source.projection == {"kind": 1, "_id": 1}
    source.last, source.has_last = 42, True
    assert source.query() == {"$and": [{"kind": "a"}, {"_id": {"$gt": 42}}]}


def test_a_resumable_query_refuses_another_sort(app: bspump.BSPumpApplication) -> None:
    with pytest.raises(ConfigError, match="sort"):
        query(app, sort='{"created": -1}')
    other = bspump.testing.make_app()
    assert query(other, sort='{"created": -1, "_id": 1}', resume_field="").sort == [("created", -1), ("_id", 1)]


def test_a_bad_filter_names_its_key(app: bspump.BSPumpApplication) -> None:
    with pytest.raises(ConfigError, match="filter"):
        query(app, filter="{status: paid}")
