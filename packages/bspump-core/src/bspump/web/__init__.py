"""A small HTTP endpoint, enabled by ``[web] listen = HOST:PORT``: Prometheus ``/metrics``, ``/health``
and ``/ready``, hardened against slow, oversized and numerous connections (see :class:`WebServer`).

``[web]`` keys: ``listen`` (``HOST:PORT``; port 0 picks a free one) and ``max_connections`` (1-4096,
default 64).
"""

from .collector import EndpointCollector, EndpointStats, PipelineCollector
from .server import WebServer

__all__ = ["EndpointCollector", "EndpointStats", "PipelineCollector", "WebServer"]
