"""Builds what pipelines.conf declares with ``type = ...``: connections, lookups and whole pipelines."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .config import ConfigError, Section
from .connection import Connection
from .errors import BSPumpError, PluginError, UnknownIdError, describe_error
from .lookup import Lookup
from .pipeline import Pipeline
from .registry import base_class
from .sink import Sink

if TYPE_CHECKING:
    from .application import BSPumpApplication

_COMPONENT_KINDS = ("source", "processor", "sink")

T = TypeVar("T")


def _resolve(app: BSPumpApplication, section: Section, kinds: tuple[str, ...]) -> type:
    name = section["type"].strip()
    errors = []
    for kind in kinds:
        try:
            return app.registry.resolve(kind, name)
        except PluginError as exc:
            errors.append(exc)
        except Exception as exc:  # `module:Class` ran the module, and the module raised
            raise ConfigError(f"importing {name.partition(':')[0]!r} for type {name!r} failed: {describe_error(exc)}",
                              file=section.file, line=section.line_of("type"), section=section.name,
                              key="type") from exc
    message = str(errors[0])
    if len(kinds) > 1 and ":" not in name:
        # Suggest across every kind the section may hold: a mistyped sink must not be offered a source.
        message = _unknown_component_type(app, name, kinds)
    raise ConfigError(message, file=section.file, line=section.line_of("type"), section=section.name, key="type")


def _unknown_component_type(app: BSPumpApplication, name: str, kinds: tuple[str, ...]) -> str:
    registry = app.registry
    reason = registry.missing_plugin(name)
    if reason:
        return f"unknown component type {name!r}: {reason}"
    for kind in registry.types:
        if kind not in kinds and name in registry.types[kind]:
            return f"{name!r} is a {kind} type; a pipeline component must be a {', '.join(kinds)}"
    known = sorted({n for kind in kinds for n in registry.names(kind)})
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return (f"unknown component type {name!r}{hint} (installed {', '.join(kinds)} types: {', '.join(known) or 'none'};"
            " a plugin may be missing, or write module:Class)")


def declare_connections_and_lookups(app: BSPumpApplication) -> None:
    """Create every ``[connection:ID]`` and ``[lookup:ID]`` that has a ``type``."""
    config = app.config
    for connection_id, section in config.connections().items():
        if "type" in section:
            cls = _resolve(app, section, ("connection",))
            _expect(section, cls, Connection, "a Connection")
            app.pump_service.add_connection(_build(section, cls, app, connection_id))
    for lookup_id, section in config.lookups().items():
        if "type" in section:
            cls = _resolve(app, section, ("lookup",))
            _expect(section, cls, Lookup, "a Lookup")
            app.pump_service.add_lookup(_build(section, cls, app, lookup_id))


def declare_pipelines(app: BSPumpApplication) -> list[Pipeline]:
    """Build every ``[pipeline:ID]`` whose component sections carry ``type``.

    Components run in the order of ``components = A, B, C`` in ``[pipeline:ID]``, or else in file order;
    ``dead_letter = ComponentID`` names the dead-letter sink, which stays out of the main flow.
    """
    config = app.config
    built: list[Pipeline] = []
    pipeline_ids = list(dict.fromkeys([*config.pipelines(), *_pipelines_with_components(app)]))
    for pipeline_id in pipeline_ids:
        sections = config.components(pipeline_id)
        typed = {cid: s for cid, s in sections.items() if "type" in s}
        if not typed or pipeline_id in app.pump_service.pipelines:
            continue
        pipeline = Pipeline(app, pipeline_id)
        order = pipeline.Config.getlist("components") or list(typed)
        dead_letter_id = str(pipeline.Config.get("dead_letter") or "")
        components: list[Any] = []
        dead_letter: Sink | None = None
        for component_id in [*order, *([dead_letter_id] if dead_letter_id and dead_letter_id not in order else [])]:
            section = typed.get(component_id)
            if section is None:
                raise pipeline.Config.error(
                    "components" if component_id in order else "dead_letter",
                    f"names component {component_id!r} but there is no [pipeline:{pipeline_id}:{component_id}] "
                    f"section with a type (have: {', '.join(typed) or 'none'})")
            cls = _resolve(app, section, _COMPONENT_KINDS)
            if not any(issubclass(cls, base_class(kind)) for kind in _COMPONENT_KINDS):
                raise ConfigError(f"{cls.__name__} is not a Source, Processor or Sink", file=section.file,
                                  line=section.line_of("type"), section=section.name, key="type")
            component = _build(section, cls, app, pipeline, id=component_id)
            if component_id == dead_letter_id:
                _expect(section, cls, Sink, "a Sink (it is the dead-letter sink)")
                dead_letter = component
            else:
                components.append(component)
        pipeline.build(*components, dead_letter=dead_letter)
        app.pump_service.add_pipeline(pipeline)
        built.append(pipeline)
    return built


def _build(section: Section, create: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``create(*args, **kwargs)``, its failures located at ``section``: an unknown connection ID at its
    ``connection`` key, any other error but a ConfigError (already located) or a bspump error at ``type``."""
    try:
        return create(*args, **kwargs)
    except UnknownIdError as exc:
        if exc.kind == "connection" and "connection" in section:
            raise ConfigError(str(exc), file=section.file, line=section.line_of("connection"),
                              section=section.name, key="connection") from exc
        raise ConfigError(str(exc), file=section.file, line=section.line, section=section.name) from exc
    except BSPumpError:  # ConfigError included
        raise
    except Exception as exc:
        raise ConfigError(f"building it failed: {describe_error(exc)}", file=section.file,
                          line=section.line_of("type"), section=section.name, key="type") from exc


def _pipelines_with_components(app: BSPumpApplication) -> list[str]:
    ids = []
    for section in app.config.sections():
        if section.kind == "pipeline" and len(section.ids) == 2:
            ids.append(section.ids[0])
    return ids


def _expect(section: Section, cls: type, base: type, what: str) -> None:
    if not issubclass(cls, base):
        raise ConfigError(f"{cls.__module__}.{cls.__name__} is not {what}", file=section.file,
                          line=section.line_of("type"), section=section.name, key="type")


def unused_sections(app: BSPumpApplication) -> list[str]:
    """Sections that nothing consumed (a likely typo in an ID), each as ``file:line [section] ...``;
    ``[pipeline:ID]`` ones are validated too."""
    from .component import build_config

    service = app.pump_service
    unused = []
    for section in app.config.sections():
        ids = section.ids
        if section.kind == "connection" and ids[0] not in service.connections:
            unused.append(f"{section.location()} configures no connection (known: {_known(service.connections)})")
        elif section.kind == "lookup" and ids[0] not in service.lookups:
            unused.append(f"{section.location()} configures no lookup (known: {_known(service.lookups)})")
        elif section.kind == "pipeline" and ids[0] not in service.pipelines:
            if len(ids) == 1:
                build_config(Pipeline, app, section.name, None)  # report typos in its keys all the same
            unused.append(f"{section.location()} configures no pipeline (known: {_known(service.pipelines)})")
        elif section.kind == "pipeline" and len(ids) == 2 and service.pipelines[ids[0]].locate(ids[1]) is None:
            components = [c.id for c in service.pipelines[ids[0]].components]
            unused.append(f"{section.location()} configures no component of pipeline {ids[0]!r} "
                          f"(its components: {', '.join(components)})")
    return unused


def _known(items: dict[str, Any]) -> str:
    return ", ".join(sorted(items)) or "none"
