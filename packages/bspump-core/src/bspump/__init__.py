"""bspump: async stream-processing pipelines.

Connector distributions (bspump-kafka, bspump-postgresql, ...) add subpackages to this namespace.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)

from ._missing import connector_attribute, install_missing_connector_hint
from .application import BSPumpApplication, PreflightError
from .async_sink import AsyncSink
from .batch import Batch, Context
from .cached_lookup import CachedLookup
from .checkpoint import CheckpointError, CheckpointStore, FileCheckpointStore
from .component import Component
from .config import ConfigError
from .connection import Connection, ConnectionState
from .delivery import Delivery, PositionTracker
from .embedded import (
    FileLookup,
    FileSink,
    FileSource,
    JsonParser,
    MemorySink,
    MemorySource,
    NullSink,
    StdinSource,
    StdoutSink,
)
from .errors import (
    BSPumpError,
    DuplicateIdError,
    PipelineBuildError,
    PipelineStoppedError,
    PluginError,
    ProcessingError,
    StartupError,
    UnknownConnectionError,
    UnknownIdError,
)
from .failures import ErrorKind, ItemFailure
from .hookspecs import hookimpl
from .lazy_contexts import LazyContexts
from .lookup import Lookup
from .pipeline import Pipeline, PipelineState
from .policy import ErrorPolicy
from .positioned_source import PositionedSource
from .processor import Generator, Processor
from .service import PumpService
from .sink import Sink, WriterSink
from .source import ManualTrigger, PeriodicTrigger, Source, Trigger, TriggerSource
from .streaming_sink import StreamingSink
from .version import __version__

install_missing_connector_hint()


def __getattr__(name: str) -> object:
    # `from bspump import mongodb` and `bspump.kafka` without an import: import the connector, or say
    # which distribution provides it (the import system turns a failed from-import into a bare ImportError).
    return connector_attribute(__name__, name)

__all__ = [
    "AsyncSink",
    "BSPumpApplication",
    "BSPumpError",
    "Batch",
    "CachedLookup",
    "CheckpointError",
    "CheckpointStore",
    "Component",
    "ConfigError",
    "Connection",
    "ConnectionState",
    "Context",
    "Delivery",
    "DuplicateIdError",
    "ErrorKind",
    "ErrorPolicy",
    "FileCheckpointStore",
    "FileLookup",
    "FileSink",
    "FileSource",
    "Generator",
    "ItemFailure",
    "JsonParser",
    "LazyContexts",
    "Lookup",
    "ManualTrigger",
    "MemorySink",
    "MemorySource",
    "NullSink",
    "PeriodicTrigger",
    "Pipeline",
    "PipelineBuildError",
    "PipelineState",
    "PipelineStoppedError",
    "PluginError",
    "PositionTracker",
    "PositionedSource",
    "PreflightError",
    "ProcessingError",
    "Processor",
    "PumpService",
    "Sink",
    "Source",
    "StartupError",
    "StdinSource",
    "StdoutSink",
    "StreamingSink",
    "Trigger",
    "TriggerSource",
    "UnknownConnectionError",
    "UnknownIdError",
    "WriterSink",
    "__version__",
    "hookimpl",
]
