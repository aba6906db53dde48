"""Option mapping, secret redaction and configuration errors: no network."""

from __future__ import annotations

import logging
import ssl
from typing import Any

import pytest

import bspump
import bspump.kafka
import bspump.kafka.plugin as kafka_plugin
from bspump.config import parse_config
from bspump.kafka.options import (
    ConsumerSettings,
    ProducerSettings,
    aiokafka_common,
    aiokafka_consumer,
    aiokafka_producer,
    confluent_common,
    confluent_consumer,
    confluent_producer,
)

SECRET = "s3cr3t-Pa55"

SASL_SSL = {
    "bootstrap_servers": "k1:9093, k2:9093",
    "client_id": "pump-1",
    "security_protocol": "SASL_SSL",
    "sasl_mechanism": "SCRAM-SHA-512",
    "sasl_plain_username": "pump",
    "sasl_plain_password": SECRET,
    "ssl_check_hostname": False,
    "request_timeout_ms": 12345,
}


def make_app(text: str = "") -> bspump.BSPumpApplication:
    return bspump.BSPumpApplication(parse_config(text, filename="pipelines.conf", environ={}),
                                    load_plugins=False, environ={})


def connection(config: dict[str, Any] | None = None, text: str = "") -> bspump.kafka.KafkaConnection:
    return bspump.kafka.KafkaConnection(make_app(text), "KafkaConnection", config=config)


def test_defaults_map_to_plaintext_aiokafka() -> None:
    conn = connection()
    kwargs = aiokafka_common(conn.options)
    assert kwargs["bootstrap_servers"] == ["localhost:9092"]
    assert kwargs["security_protocol"] == "PLAINTEXT"
    assert "ssl_context" not in kwargs and "sasl_mechanism" not in kwargs
    assert conn.client == "aiokafka"


def test_sasl_ssl_settings_reach_aiokafka() -> None:
    conn = connection(SASL_SSL)
    kwargs = aiokafka_common(conn.options)
    assert kwargs["bootstrap_servers"] == ["k1:9093", "k2:9093"]
    assert kwargs["client_id"] == "pump-1"
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "pump"
    assert kwargs["sasl_plain_password"] == SECRET
    assert kwargs["request_timeout_ms"] == 12345
    context = kwargs["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname is False


def test_sasl_ssl_settings_reach_confluent() -> None:
    conn = connection({**SASL_SSL, "ssl_cafile": "/etc/ca.pem", "ssl_certfile": "/etc/c.pem",
                       "ssl_keyfile": "/etc/k.pem", "ssl_password": "keypass"})
    conf = confluent_common(conn.options)
    assert conf["bootstrap.servers"] == "k1:9093,k2:9093"
    assert conf["security.protocol"] == "sasl_ssl"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["sasl.username"] == "pump"
    assert conf["sasl.password"] == SECRET
    assert conf["ssl.ca.location"] == "/etc/ca.pem"
    assert conf["ssl.certificate.location"] == "/etc/c.pem"
    assert conf["ssl.key.location"] == "/etc/k.pem"
    assert conf["ssl.key.password"] == "keypass"
    assert conf["ssl.endpoint.identification.algorithm"] == "none"
    assert conf["socket.timeout.ms"] == 12345


def test_ssl_files_reach_aiokafka_ssl_context(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_create_ssl_context(**kwargs: Any) -> ssl.SSLContext:
        seen.update(kwargs)
        return ssl.create_default_context()

    monkeypatch.setattr("aiokafka.helpers.create_ssl_context", fake_create_ssl_context)
    conn = connection({"security_protocol": "SSL", "ssl_cafile": "/ca.pem", "ssl_certfile": "/c.pem",
                       "ssl_keyfile": "/k.pem", "ssl_password": "kp"})
    kwargs = aiokafka_common(conn.options)
    assert seen == {"cafile": "/ca.pem", "certfile": "/c.pem", "keyfile": "/k.pem", "password": "kp"}
    assert "sasl_mechanism" not in kwargs


def test_connection_options_from_pipelines_conf() -> None:
    conn = connection(text="""
[connection:KafkaConnection]
bootstrap_servers=kafka:9092
security_protocol=SASL_PLAINTEXT
sasl_plain_username=u
sasl_plain_password=p
client=confluent
""")
    assert conn.client == "confluent"
    assert conn.options.sasl_mechanism == "PLAIN"  # the default mechanism for SASL
    conf = confluent_common(conn.options)
    assert conf["security.protocol"] == "sasl_plaintext"
    assert conf["sasl.username"] == "u" and conf["sasl.password"] == "p"


def test_consumer_and_producer_settings_map_to_both_clients() -> None:
    consumer = ConsumerSettings(group_id="g", topics=("a",), auto_offset_reset="latest", session_timeout_ms=7000)
    assert aiokafka_consumer(consumer)["enable_auto_commit"] is False
    assert aiokafka_consumer(consumer)["session_timeout_ms"] == 7000
    assert confluent_consumer(consumer)["enable.auto.commit"] is False
    assert confluent_consumer(consumer)["auto.offset.reset"] == "latest"
    producer = ProducerSettings(acks="1", compression_type="zstd", linger_ms=20, max_batch_size=1000)
    assert aiokafka_producer(producer)["acks"] == 1
    assert aiokafka_producer(producer)["compression_type"] == "zstd"
    assert aiokafka_producer(ProducerSettings())["acks"] == "all"
    assert aiokafka_producer(ProducerSettings())["compression_type"] is None
    conf = confluent_producer(connection().options, producer)
    assert conf["acks"] == "1" and conf["linger.ms"] == 20 and conf["batch.size"] == 1000


def test_secrets_never_appear_in_reprs() -> None:
    conn = connection({**SASL_SSL, "ssl_password": "keypass"})
    for text in (repr(conn), repr(conn.options), repr(conn.Config), str(conn.Config.redacted())):
        assert SECRET not in text and "keypass" not in text
    assert "***" in repr(conn.options)


def test_secrets_never_appear_in_config_errors() -> None:
    with pytest.raises(bspump.ConfigError) as info:
        connection({**SASL_SSL, "request_timeout_ms": "soon"})
    assert SECRET not in str(info.value)
    with pytest.raises(bspump.ConfigError) as info:
        connection(text=f"""
[connection:KafkaConnection]
sasl_plain_pasword={SECRET}
""")
    message = str(info.value)
    assert "did you mean 'sasl_plain_password'" in message
    assert SECRET not in message


async def test_secrets_never_appear_in_connection_logs(caplog: pytest.LogCaptureFixture) -> None:
    """A failing connect is logged with its error, never with the credentials."""
    conn = connection({**SASL_SSL, "security_protocol": "SASL_PLAINTEXT", "bootstrap_servers": "127.0.0.1:1",
                       "max_connect_attempts": 1, "request_timeout_ms": 1000})
    caplog.set_level(logging.DEBUG)
    await conn.open()
    task = conn._task
    assert task is not None
    await task
    assert conn.last_error is not None
    assert SECRET not in caplog.text
    assert SECRET not in str(conn.last_error)
    await conn.close()


@pytest.mark.parametrize(
    ("config", "key", "words"),
    [
        ({"security_protocol": "TLS"}, "security_protocol", "PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "MD5", "sasl_plain_username": "u",
          "sasl_plain_password": "p"}, "sasl_mechanism", "SCRAM-SHA-256"),
        ({"security_protocol": "SASL_SSL"}, "sasl_plain_username", "needs sasl_plain_username"),
        ({"sasl_mechanism": "PLAIN"}, "sasl_mechanism", "does not use SASL"),
        ({"client": "kafka-python"}, "client", "aiokafka, confluent"),
        ({"bootstrap_servers": ""}, "bootstrap_servers", "is required"),
    ],
)
def test_connection_config_errors(config: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(bspump.ConfigError) as info:
        connection(config)
    assert key in str(info.value) and words in str(info.value)


def pipeline_with(source_config: dict[str, Any] | None = None, sink_config: dict[str, Any] | None = None,
                  text: str = "") -> tuple[bspump.kafka.KafkaSource, bspump.kafka.KafkaSink]:
    app = make_app(text)
    app.pump_service.add_connection(bspump.kafka.KafkaConnection(app, "KafkaConnection"))
    pipeline = bspump.Pipeline(app, "Events")
    source = bspump.kafka.KafkaSource(app, pipeline, connection="KafkaConnection",
                                      config=source_config if source_config is not None else {"topics": "in"})
    sink = bspump.kafka.KafkaSink(app, pipeline, connection="KafkaConnection",
                                  config=sink_config if sink_config is not None else {"topic": "out"})
    return source, sink


def test_source_defaults() -> None:
    source, sink = pipeline_with()
    assert source.group_id == "Events"  # derived from the pipeline ID: one group per pipeline
    assert source.settings.topics == ("in",)
    assert source.settings.auto_offset_reset == "earliest"
    assert source.format == "bytes"
    assert sink.settings.acks == "all"


def test_source_and_sink_from_pipelines_conf() -> None:
    source, sink = pipeline_with({}, {}, text="""
[pipeline:Events:KafkaSource]
topics = a, b
group_id = my-group
format = utf-8
auto_offset_reset = latest

[pipeline:Events:KafkaSink]
topic = out
compression_type = lz4
linger_ms = 50
""")
    assert source.settings.topics == ("a", "b")
    assert source.group_id == "my-group"
    assert source.format == "text"
    assert source.settings.auto_offset_reset == "latest"
    assert sink.topic == "out"
    assert sink.settings.compression_type == "lz4" and sink.settings.linger_ms == 50


@pytest.mark.parametrize(
    ("source_config", "key", "words"),
    [
        ({}, "topics", "either topics"),
        ({"topics": "a", "topic_pattern": "b.*"}, "topics", "not both"),
        ({"topic_pattern": "(["}, "topic_pattern", "not a valid regular expression"),
        ({"topics": "a", "format": "avro"}, "format", "bytes, text, json"),
        ({"topics": "a", "auto_offset_reset": "oldest"}, "auto_offset_reset", "earliest"),
        ({"topics": "a", "batch_sise": 10}, "batch_sise", "did you mean 'batch_size'"),
    ],
)
def test_source_config_errors(source_config: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(bspump.ConfigError) as info:
        pipeline_with(source_config)
    assert key in str(info.value) and words in str(info.value)


@pytest.mark.parametrize(
    ("sink_config", "key", "words"),
    [
        ({}, "topic", "is required"),
        ({"topic": "t", "acks": "some"}, "acks", "all, 1, 0"),
        ({"topic": "t", "compression_type": "brotli"}, "compression_type", "zstd"),
        ({"topic": "t", "format": "xml"}, "format", "auto, bytes, text, json"),
    ],
)
def test_sink_config_errors(sink_config: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(bspump.ConfigError) as info:
        pipeline_with(None, sink_config)
    assert key in str(info.value) and words in str(info.value)


def test_unknown_connection_lists_known_ones() -> None:
    app = make_app()
    app.pump_service.add_connection(bspump.kafka.KafkaConnection(app, "Kafka1"))
    pipeline = bspump.Pipeline(app, "P")
    with pytest.raises(bspump.UnknownConnectionError) as info:
        bspump.kafka.KafkaSource(app, pipeline, connection="Kafka2", config={"topics": "a"})
    assert "Kafka1" in str(info.value)


def test_sink_encoding_keys_headers_and_dead_letter_headers() -> None:
    _, sink = pipeline_with()
    contexts = [
        {"key": b"k", "headers": (("h", b"1"),)},
        {"key": "text-key"},
        {},
    ]
    batch = bspump.Batch([{"a": 1}, "text", b"raw"], bspump.Delivery(), None, contexts)
    out, index_map, failures = sink.encode(batch)
    assert failures == [] and index_map is None
    assert [out.encode(v) if out.encode else v for v in out.values] == [b'{"a":1}', b"text", b"raw"]
    assert out.keys == [b"k", b"text-key", None]
    assert out.headers == [(("h", b"1"),), None, None]

    sink._fast = False  # as the dead-letter sink
    letter = {"topic": "in", "partition": 1, "offset": 7, "error": "JSONDecodeError: bad", "error_type":
              "JSONDecodeError", "error_component": "P.KafkaSource", "error_pipeline": "P"}
    out, _, _ = sink.encode(bspump.Batch([b"{bad"], bspump.Delivery(), None, [letter]))
    assert out.headers is not None
    headers = dict(out.headers[0] or [])
    assert headers["error"] == b"JSONDecodeError: bad"
    assert headers["error_type"] == b"JSONDecodeError"
    assert headers["error_component"] == b"P.KafkaSource"
    assert headers["error_pipeline"] == b"P"
    assert headers["source_topic"] == b"in" and headers["source_offset"] == b"7"


def test_sink_isolates_events_that_cannot_be_encoded() -> None:
    _, sink = pipeline_with(None, {"topic": "t", "format": "bytes"})
    out, index_map, failures = sink.encode(bspump.Batch([b"a", {"x": 1}, b"c"], bspump.Delivery()))
    assert out.values == [b"a", b"c"]
    assert index_map == [0, 2]
    assert [f.index for f in failures] == [1] and failures[0].kind is bspump.ErrorKind.PERMANENT


def test_plugin_registers_types() -> None:
    app = bspump.BSPumpApplication(load_plugins=False, environ={})
    info = app.plugins.register("kafka", kafka_plugin)
    assert info.status == "loaded"
    assert sorted(info.types) == ["connection:kafka.KafkaConnection", "sink:kafka.KafkaSink",
                                  "source:kafka.KafkaSource"]


def test_confluent_clients_hash_keys_like_java_and_reconnect_quickly() -> None:
    """Keys land on the partition aiokafka (and the Java client) would pick, so switching backends keeps
    per-key order; the first reconnect delay is short because it also delays a new client's first metadata."""
    options = connection({"reconnect_backoff_ms": 35}).options
    assert confluent_producer(options, ProducerSettings())["partitioner"] == "murmur2_random"
    assert confluent_common(options)["reconnect.backoff.ms"] == 35
    assert confluent_common(connection().options)["reconnect.backoff.ms"] == 20


def test_librdkafkas_reconnect_backoff_is_capped_at_the_connections_reconnect_max() -> None:
    """librdkafka reconnects on its own: no longer apart than bspump's connection would probe."""
    assert confluent_common(connection({"reconnect_max": "2s"}).options)["reconnect.backoff.max.ms"] == 2000
    assert confluent_common(connection().options)["reconnect.backoff.max.ms"] == 30000


def test_group_instance_id_makes_a_static_member_on_both_clients() -> None:
    source, _ = pipeline_with({"topics": "in", "group_instance_id": "worker-1"})
    assert source.settings.group_instance_id == "worker-1"
    assert aiokafka_consumer(source.settings)["group_instance_id"] == "worker-1"
    assert confluent_consumer(source.settings)["group.instance.id"] == "worker-1"
    dynamic, _ = pipeline_with()
    assert aiokafka_consumer(dynamic.settings)["group_instance_id"] is None
    assert "group.instance.id" not in confluent_consumer(dynamic.settings)


def _metadata(topics: dict[str, Any]) -> Any:
    from types import SimpleNamespace

    return SimpleNamespace(topics={
        name: SimpleNamespace(error=error, partitions={
            p: SimpleNamespace(id=p, leader=leader, error=None) for p, leader in leaders.items()})
        for name, (error, leaders) in topics.items()
    })


def test_unkeyed_partition_rotates_over_partitions_with_a_leader() -> None:
    from bspump.kafka.confluent_producer import _PartitionCounts

    counts = _PartitionCounts(max_age=300.0)
    counts.learn(_metadata({"out": (None, {0: 1, 1: -1, 2: 1}), "gone": ("UNKNOWN_TOPIC", {})}), now=0.0)
    assert [counts.next("out", now=1.0) for _ in range(4)] == [0, 2, 0, 2]  # partition 1 has no leader
    assert counts.next("gone", now=1.0) == -1  # librdkafka decides, no new lookup until max_age
    assert counts.next("other", now=1.0) is None  # unknown: to be looked up
    assert counts.next("out", now=301.0) is None  # stale: to be looked up again
