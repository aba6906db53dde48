"""Elasticsearch for bspump: a bulk sink that classifies every item of every response and acknowledges only
what the cluster confirmed, a sorted, resumable source, and a cached lookup, on ``elasticsearch[async]``
(``AsyncElasticsearch``)."""

from .connection import ElasticSearchConnection
from .errors import BulkItemError
from .lookup import ElasticSearchLookup
from .sink import ElasticSearchSink
from .source import ElasticSearchSource

__all__ = [
    "BulkItemError",
    "ElasticSearchConnection",
    "ElasticSearchLookup",
    "ElasticSearchSink",
    "ElasticSearchSource",
]
