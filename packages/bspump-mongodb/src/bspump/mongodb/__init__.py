"""MongoDB for bspump, on PyMongo's async API (``AsyncMongoClient``): a change-stream source that resumes from
the last acknowledged event, a query source, a bulk sink with per-item results, a lookup, and a checkpoint store in the
deployment itself."""

from .change_stream import MongoDBChangeStreamSource
from .checkpoint import MongoDBCheckpointStore
from .connection import MongoDBConnection
from .errors import ChangeStreamHistoryLostError, classify_mongo_error
from .lookup import MongoDBLookup
from .sink import MissingKeyError, MongoDBSink
from .source import MongoDBSource

__all__ = [
    "ChangeStreamHistoryLostError",
    "MissingKeyError",
    "MongoDBChangeStreamSource",
    "MongoDBCheckpointStore",
    "MongoDBConnection",
    "MongoDBLookup",
    "MongoDBSink",
    "MongoDBSource",
    "classify_mongo_error",
]
