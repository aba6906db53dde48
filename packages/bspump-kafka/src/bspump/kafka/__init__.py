"""Apache Kafka for bspump: a consumer-group source that commits after acknowledgement and a sink that
acknowledges on broker delivery, on aiokafka (default) or confluent-kafka (``client = confluent``)."""

from .connection import KafkaConnection
from .sink import KafkaSink
from .source import KafkaSource

__all__ = ["KafkaConnection", "KafkaSink", "KafkaSource"]
