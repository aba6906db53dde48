"""bspump-core's own connectors, which need no third-party client: files, stdio, memory."""

from .file import FileSink, FileSource
from .lookup import FileLookup
from .memory import MemorySink, MemorySource, NullSink
from .processors import JsonParser
from .stdio import StdinSource, StdoutSink

__all__ = [
    "FileLookup",
    "FileSink",
    "FileSource",
    "JsonParser",
    "MemorySink",
    "MemorySource",
    "NullSink",
    "StdinSource",
    "StdoutSink",
]
