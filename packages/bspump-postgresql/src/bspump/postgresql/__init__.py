"""PostgreSQL for bspump, on asyncpg: change data capture through logical decoding, a streaming query source
with an incremental mode, a LISTEN source, a COPY/upsert sink that isolates bad rows, and a checkpoint store."""

from .cdc import PostgreSQLCDCSource
from .change import format_lsn, parse_lsn
from .checkpoint import PostgreSQLCheckpointStore
from .connection import PostgreSQLConnection
from .lookup import PostgreSQLLookup
from .notify import PostgreSQLNotifySource
from .sink import PostgreSQLSink
from .source import PostgreSQLSource

__all__ = [
    "PostgreSQLCDCSource",
    "PostgreSQLCheckpointStore",
    "PostgreSQLConnection",
    "PostgreSQLLookup",
    "PostgreSQLNotifySource",
    "PostgreSQLSink",
    "PostgreSQLSource",
    "format_lsn",
    "parse_lsn",
]
