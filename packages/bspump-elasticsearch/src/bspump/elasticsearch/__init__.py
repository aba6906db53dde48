"""Elasticsearch for bspump: a bulk sink that classifies every item of every response and acknowledges only
what the cluster confirmed, on ``elasticsearch[async]`` (``AsyncElasticsearch``)."""

from .connection import ElasticSearchConnection
from .errors import BulkItemError
from .sink import ElasticSearchSink
from .source import ElasticSearchSource

__all__ = ["BulkItemError", "ElasticSearchConnection", "ElasticSearchSink", "ElasticSearchSource"]
