"""bspump: async stream-processing pipelines.

Connector distributions (bspump-kafka, bspump-postgresql, ...) add subpackages to this namespace.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)

from ._missing import install_missing_connector_hint  # noqa: E402
from .application import BSPumpApplication  # noqa: E402
from .batch import Batch, Context  # noqa: E402
from .component import Component  # noqa: E402
from .config import ConfigError  # noqa: E402
from .connection import Connection, ConnectionState  # noqa: E402
from .delivery import Delivery, PositionTracker  # noqa: E402
from .embedded import (  # noqa: E402
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
from .errors import (  # noqa: E402
    BSPumpError,
    DuplicateIdError,
    PipelineBuildError,
    PipelineStoppedError,
    PluginError,
    ProcessingError,
    UnknownConnectionError,
    UnknownIdError,
)
from .hookspecs import hookimpl  # noqa: E402
from .lookup import Lookup  # noqa: E402
from .pipeline import ErrorPolicy, Pipeline, PipelineState  # noqa: E402
from .processor import Generator, Processor  # noqa: E402
from .service import PumpService  # noqa: E402
from .sink import AsyncSink, ItemFailure, Sink  # noqa: E402
from .source import ManualTrigger, PeriodicTrigger, Source, Trigger, TriggerSource  # noqa: E402
from .version import __version__  # noqa: E402

install_missing_connector_hint()

__all__ = [
    "AsyncSink",
    "BSPumpApplication",
    "BSPumpError",
    "Batch",
    "Component",
    "ConfigError",
    "Connection",
    "ConnectionState",
    "Context",
    "Delivery",
    "DuplicateIdError",
    "ErrorPolicy",
    "FileLookup",
    "FileSink",
    "FileSource",
    "Generator",
    "ItemFailure",
    "JsonParser",
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
    "Processor",
    "ProcessingError",
    "PumpService",
    "Sink",
    "Source",
    "StdinSource",
    "StdoutSink",
    "Trigger",
    "TriggerSource",
    "UnknownConnectionError",
    "UnknownIdError",
    "__version__",
    "hookimpl",
]
