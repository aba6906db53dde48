"""Error classification, on errors built from server replies as MongoDB and the emulators send them."""

from __future__ import annotations

import pytest
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    DocumentTooLarge,
    DuplicateKeyError,
    ExecutionTimeout,
    InvalidOperation,
    NetworkTimeout,
    NotPrimaryError,
    OperationFailure,
    ServerSelectionTimeoutError,
    WriteConcernError,
    WTimeoutError,
)

from bspump import ErrorKind
from bspump.mongodb import classify_mongo_error
from bspump.mongodb.errors import ItemWriteError


@pytest.mark.parametrize(("error", "kind"), [
    (AutoReconnect("connection closed"), ErrorKind.LINK),
    (NetworkTimeout("timed out"), ErrorKind.LINK),
    (ServerSelectionTimeoutError("No servers found"), ErrorKind.LINK),
    (NotPrimaryError("not primary", {"code": 10107, "errmsg": "not primary"}), ErrorKind.LINK),
    (OperationFailure("not writable primary", 10107), ErrorKind.LINK),
    (OperationFailure("shutdown in progress", 91), ErrorKind.LINK),
    (WriteConcernError("waiting for replication timed out", 64), ErrorKind.TRANSIENT),
    (WTimeoutError("waiting for replication timed out", 64), ErrorKind.TRANSIENT),
    (ExecutionTimeout("operation exceeded time limit", 50), ErrorKind.TRANSIENT),
    (OperationFailure("WriteConflict", 112), ErrorKind.TRANSIENT),
    (OperationFailure("cursor id 42 not found", 43), ErrorKind.TRANSIENT),
    (OperationFailure("retry me", 999, {"errorLabels": ["RetryableWriteError"]}), ErrorKind.TRANSIENT),
    (DuplicateKeyError("E11000 duplicate key error", 11000), ErrorKind.PERMANENT),
    (OperationFailure("Document failed validation", 121), ErrorKind.PERMANENT),
    (OperationFailure("Resume of change stream was not possible", 286), ErrorKind.PERMANENT),
    (DocumentTooLarge("BSON document too large"), ErrorKind.PERMANENT),
    (InvalidOperation("Cannot use AsyncMongoClient after close"), ErrorKind.TRANSIENT),  # replaced by a reconnect
    (InvalidOperation("cannot set options after executing query"), ErrorKind.PERMANENT),
    (ConnectionRefusedError("refused"), ErrorKind.LINK),
    (ValueError("bad"), ErrorKind.PERMANENT),
])
def test_classification(error: BaseException, kind: ErrorKind) -> None:
    assert classify_mongo_error(error) is kind


def bulk_error(*codes: int, concern: bool = False) -> BulkWriteError:
    return BulkWriteError({
        "writeErrors": [{"index": i, "code": code, "errmsg": f"error {code}"} for i, code in enumerate(codes)],
        "writeConcernErrors": [{"code": 64, "errmsg": "waiting for replication timed out"}] if concern else [],
        "nInserted": 0,
    })


def test_a_bulk_error_is_the_kind_of_its_most_hopeful_item() -> None:
    assert classify_mongo_error(bulk_error(11000, 121)) is ErrorKind.PERMANENT
    assert classify_mongo_error(bulk_error(11000, 112)) is ErrorKind.TRANSIENT
    assert classify_mongo_error(bulk_error(11000, 10107)) is ErrorKind.LINK
    assert classify_mongo_error(bulk_error(11000, concern=True)) is ErrorKind.TRANSIENT


def test_an_item_error_shows_the_servers_message_but_never_the_document() -> None:
    item = {"index": 3, "code": 11000, "errmsg": "E11000 duplicate key error collection: shop.users index: _id_",
            "keyValue": {"_id": 7}, "op": {"_id": 7, "password": "hunter2-secret"}}
    error = ItemWriteError(item)
    assert str(error) == "E11000 duplicate key error collection: shop.users index: _id_ (code 11000)"
    assert "hunter2" not in str(error) and "hunter2" not in repr(error.args)
    assert classify_mongo_error(error) is ErrorKind.PERMANENT
    assert error.code == 11000 and error.details == {k: v for k, v in item.items() if k != "op"}
