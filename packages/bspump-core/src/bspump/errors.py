"""Exceptions raised by bspump; each names the component at fault and, where it helps, the remedy."""

from __future__ import annotations

from collections.abc import Iterable


class BSPumpError(Exception):
    """Base class of bspump's own errors."""


class UnknownIdError(BSPumpError, LookupError):
    """An ID (connection, pipeline, lookup, component) that nothing registered."""

    def __init__(self, kind: str, wanted: str, known: Iterable[str], referrer: str | None = None) -> None:
        self.kind = kind
        self.wanted = wanted
        self.known = sorted(known)
        where = f" (referenced by {referrer})" if referrer else ""
        listed = ", ".join(repr(k) for k in self.known) or "none"
        super().__init__(f"unknown {kind} ID {wanted!r}{where}; known {kind} IDs: {listed}")

    def __str__(self) -> str:  # KeyError-style quoting would hide the message
        return str(self.args[0])


class UnknownConnectionError(UnknownIdError):
    """A source or sink names a connection that was not added to the PumpService."""

    def __init__(self, wanted: str, known: Iterable[str], referrer: str | None = None) -> None:
        super().__init__("connection", wanted, known, referrer)


class DuplicateIdError(BSPumpError, ValueError):
    """Two objects of one kind registered under the same ID."""


class PipelineBuildError(BSPumpError, ValueError):
    """A pipeline was assembled from components in an order or number that cannot work."""


class PipelineStoppedError(BSPumpError):
    """A pipeline stopped because an event failed under the ``stop`` error policy."""


class ProcessingError(BSPumpError):
    """An event failed in a component; carries the component and a short, secret-free description of the event."""

    def __init__(self, pipeline_id: str, component_id: str, cause: BaseException, event_hint: str = "") -> None:
        self.pipeline_id = pipeline_id
        self.component_id = component_id
        self.cause = cause
        hint = f" at {event_hint}" if event_hint else ""
        super().__init__(
            f"pipeline {pipeline_id!r}, component {component_id!r}{hint}: {type(cause).__name__}: {cause}"
        )


class PluginError(BSPumpError):
    """A plugin could not be loaded or registered, or a type name does not resolve."""


class StartupError(BSPumpError, RuntimeError):
    """A lookup or pipeline failed to start; the message names its section (``file:line [lookup:ID]``)."""


def describe_error(error: BaseException | None) -> str:
    """``Type: message`` on one line, with credentials in URLs and ``password=`` values hidden."""
    from .config.secrets import redact_value  # here: the config package imports this module

    if error is None:
        return "no details"
    text = " ".join(str(error).split())
    name = type(error).__name__
    if not text or text == name:
        return name
    if text.startswith(f"{name}:") or text.startswith(f"[{name}]"):
        return redact_value(text)  # the client already named its error type (aiokafka does): not twice
    return f"{name}: {redact_value(text)}"
