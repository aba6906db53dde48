"""MQTT for bspump, on aiomqtt: a subscribe source that acknowledges QoS 1/2 messages to the broker only after
the sink acknowledged them, and a publish sink that acknowledges on PUBACK/PUBCOMP."""

from .connection import MQTTConnection, MQTTLinkError
from .lookup import MQTTLookup
from .sink import MQTTSink
from .source import MQTTSource

__all__ = ["MQTTConnection", "MQTTLinkError", "MQTTLookup", "MQTTSink", "MQTTSource"]
