"""Configuration: defaults, invalid values named by section and key, secrets hidden, errors classified."""

from __future__ import annotations

from pathlib import Path

import aiomqtt
import paho.mqtt.client as paho
import pytest

import bspump
from bspump.config import ConfigError
from bspump.failures import ErrorKind
from bspump.mqtt import MQTTConnection, MQTTLinkError, MQTTSink, MQTTSource
from bspump.testing import make_app


def _app() -> bspump.BSPumpApplication:
    app = make_app()
    app.get_service("bspump.PumpService").add_connection(MQTTConnection(app, "MQTTConnection"))
    return app


def test_seed_page_constructor_and_defaults() -> None:
    app = make_app()
    connection = MQTTConnection(app, "MQTTConnection")
    assert (connection.host, connection.port, connection.protocol) == ("localhost", 1883, "5")
    assert connection.persistent, "sessions are persistent by default: a restart must not lose messages"
    assert connection.client_id.startswith("bspump-") and connection.client_id.endswith("-MQTTConnection")


@pytest.mark.parametrize(("topics", "words"), [
    ("a/#/b", "'#' must be a whole level"), ("a/b+", "'\\+' must be a whole level"),
    ("$share/g", "\\$share/GROUP/filter"), ("$share/+/x", "\\$share/GROUP/filter"),
])
def test_invalid_topic_filters_name_the_key(topics: str, words: str) -> None:
    app = _app()
    pipeline = bspump.Pipeline(app, "P")
    with pytest.raises(ConfigError, match=words) as info:
        MQTTSource(app, pipeline, config={"topics": topics})
    assert "topics" in str(info.value)


def test_valid_filters_and_shared_subscriptions() -> None:
    app = _app()
    pipeline = bspump.Pipeline(app, "P")
    source = MQTTSource(app, pipeline, config={"topics": "a/+/c, $share/pumps/x/#, #", "qos": 2})
    assert source.filters == ("a/+/c", "$share/pumps/x/#", "#") and source.qos == 2


def test_sink_needs_a_valid_topic() -> None:
    app = _app()
    pipeline = bspump.Pipeline(app, "P")
    with pytest.raises(ConfigError, match="wildcards"):
        MQTTSink(app, pipeline, config={"topic": "out/+"})
    with pytest.raises(ConfigError, match="topic"):
        MQTTSink(app, pipeline)


def test_sink_encodes_events() -> None:
    app = _app()
    pipeline = bspump.Pipeline(app, "P")
    sink = MQTTSink(app, pipeline, config={"topic": "t"})
    assert sink.encode({"a": 1}, {}) == b'{"a":1}'
    letter = sink.encode(b"raw", {"error": "ValueError: bad", "topic": "in/x"})
    assert b'"error":"ValueError: bad"' in letter and b'"event":"raw"' in letter
    raw = MQTTSink(app, pipeline, id="Raw", config={"topic": "t", "format": "bytes"})
    with pytest.raises(TypeError, match="format = bytes"):
        raw.encode({"a": 1}, {})


def test_preflight_names_missing_files(tmp_path: Path) -> None:
    app = make_app()
    connection = MQTTConnection(app, "C", config={"tls": True, "tls_cafile": str(tmp_path / "missing.pem")})
    with pytest.raises(ConfigError, match="tls_cafile"):
        connection.preflight()


def test_password_is_not_shown() -> None:
    app = make_app()
    connection = MQTTConnection(app, "C", config={"username": "u", "password": "hunter2-secret"})
    assert "hunter2-secret" not in repr(connection.Config) + str(connection.Config.redacted())


@pytest.mark.parametrize(("error", "kind"), [
    (MQTTLinkError("gone"), ErrorKind.LINK),
    (aiomqtt.MqttCodeError(paho.MQTT_ERR_NO_CONN, "Could not publish message"), ErrorKind.LINK),
    (aiomqtt.MqttCodeError(paho.MQTT_ERR_CONN_LOST, "lost"), ErrorKind.LINK),
    (aiomqtt.MqttCodeError(paho.MQTT_ERR_QUEUE_SIZE, "full"), ErrorKind.TRANSIENT),
    (aiomqtt.MqttCodeError(paho.MQTT_ERR_PAYLOAD_SIZE, "too big"), ErrorKind.PERMANENT),
    (aiomqtt.MqttError("Operation timed out"), ErrorKind.TRANSIENT),
    (aiomqtt.MqttError("Disconnected during message iteration"), ErrorKind.LINK),
    (ValueError("Invalid topic"), ErrorKind.PERMANENT),
    (ConnectionRefusedError(), ErrorKind.LINK),
])
def test_errors_are_classified(error: BaseException, kind: ErrorKind) -> None:
    assert MQTTConnection(make_app(), "C").classify(error) is kind
