"""Registers bspump-core's own types as ``core.*`` (for ``type = core.FileSource`` in pipelines.conf)."""

from __future__ import annotations

from ..hookspecs import Register, hookimpl
from . import FileLookup, FileSink, FileSource, JsonParser, MemorySink, MemorySource, NullSink, StdinSource, StdoutSink


@hookimpl
def register_sources(register: Register) -> None:
    for cls in (FileSource, StdinSource, MemorySource):
        register(cls)


@hookimpl
def register_sinks(register: Register) -> None:
    for cls in (FileSink, StdoutSink, MemorySink, NullSink):
        register(cls)


@hookimpl
def register_processors(register: Register) -> None:
    register(JsonParser)


@hookimpl
def register_lookups(register: Register) -> None:
    register(FileLookup)
