"""Classification of the client's exceptions and of bulk item errors."""

from __future__ import annotations

import elastic_transport
import pytest
from elasticsearch import ApiError, ConnectionError, ConnectionTimeout

from bspump import ErrorKind
from bspump.elasticsearch import BulkItemError
from bspump.elasticsearch.errors import classify_es_error


def api_error(status: int) -> ApiError:
    meta = elastic_transport.ApiResponseMeta(status=status, http_version="1.1", headers=elastic_transport.HttpHeaders(),
                                             duration=0.0, node=elastic_transport.NodeConfig("http", "h", 9200))
    return ApiError(f"status {status}", meta, {"error": {"type": "x"}})


@pytest.mark.parametrize(("status", "kind"), [
    (429, ErrorKind.TRANSIENT), (500, ErrorKind.TRANSIENT), (503, ErrorKind.TRANSIENT), (408, ErrorKind.TRANSIENT),
    (400, ErrorKind.PERMANENT), (401, ErrorKind.PERMANENT), (403, ErrorKind.PERMANENT), (404, ErrorKind.PERMANENT),
    (409, ErrorKind.PERMANENT),
])
def test_statuses(status: int, kind: ErrorKind) -> None:
    assert classify_es_error(BulkItemError(status, "t", "r")) is kind
    assert classify_es_error(api_error(status)) is kind


def test_transport_errors() -> None:
    assert classify_es_error(ConnectionError("refused")) is ErrorKind.LINK
    assert classify_es_error(elastic_transport.TlsError("bad certificate")) is ErrorKind.LINK
    assert classify_es_error(ConnectionTimeout("timed out")) is ErrorKind.TRANSIENT
    assert classify_es_error(elastic_transport.SerializationError("bad json")) is ErrorKind.PERMANENT
    assert classify_es_error(ConnectionResetError()) is ErrorKind.LINK  # the core's table for the rest


def test_item_errors_of_a_closing_shard_are_transient_whatever_their_status() -> None:
    assert classify_es_error(BulkItemError(400, "index_shard_closed_exception", "closed")) is ErrorKind.TRANSIENT
    assert classify_es_error(BulkItemError(404, "shard_not_found_exception", "gone")) is ErrorKind.TRANSIENT
    assert classify_es_error(BulkItemError(400, "mapper_parsing_exception", "bad")) is ErrorKind.PERMANENT


def test_a_request_on_a_client_closed_meanwhile_is_a_link_failure() -> None:
    """aiohttp raises these RuntimeErrors, which the transport passes on unwrapped, when the connection closed
    the client to reconnect while another writer's request started: it got no answer; nothing is wrong with
    the events (classified PERMANENT they would be dead-lettered)."""
    assert classify_es_error(RuntimeError("Session is closed")) is ErrorKind.LINK
    assert classify_es_error(RuntimeError("Connector is closed.")) is ErrorKind.LINK
    assert classify_es_error(RuntimeError("something else")) is ErrorKind.PERMANENT
