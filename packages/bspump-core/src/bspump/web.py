"""A small HTTP endpoint: Prometheus ``/metrics``, ``/health`` and ``/ready``, enabled by ``[web] listen``.

Written on asyncio streams so that bspump-core needs no web framework.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .config import ComponentConfig
from .pipeline import PipelineState

if TYPE_CHECKING:
    from .application import BSPumpApplication

log = logging.getLogger("bspump.web")


class PipelineCollector(Collector):
    """Reads the pipelines' counters when Prometheus scrapes; nothing is updated per event."""

    def __init__(self, app: BSPumpApplication) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        pipelines = self.app.pump_service.pipelines.values()
        families = {
            "in": CounterMetricFamily("bspump_pipeline_events_in", "Events read by the sources", labels=["pipeline"]),
            "out": CounterMetricFamily("bspump_pipeline_events_out", "Events handed to the sink", labels=["pipeline"]),
            "dropped": CounterMetricFamily("bspump_pipeline_events_dropped", "Events filtered or skipped",
                                           labels=["pipeline"]),
            "errors": CounterMetricFamily("bspump_pipeline_errors", "Events that failed", labels=["pipeline"]),
        }
        in_flight = GaugeMetricFamily("bspump_pipeline_in_flight", "Events awaiting acknowledgement",
                                      labels=["pipeline"])
        eps = GaugeMetricFamily("bspump_pipeline_events_per_second", "Input rate over ~10 s", labels=["pipeline"])
        component = CounterMetricFamily("bspump_component_events", "Events per component and direction",
                                        labels=["pipeline", "component", "direction"])
        gauges = GaugeMetricFamily("bspump_component_gauge", "Values components report (e.g. a source's lag)",
                                   labels=["pipeline", "component", "name"])
        for pipeline in pipelines:
            snapshot = pipeline.metrics()
            for key, family in families.items():
                family.add_metric([pipeline.id], snapshot[key])
            in_flight.add_metric([pipeline.id], snapshot["in_flight"])
            eps.add_metric([pipeline.id], snapshot["eps"])
            for component_id, counters in snapshot["components"].items():
                for direction in ("in", "out", "dropped", "errors"):
                    component.add_metric([pipeline.id, component_id, direction], counters[direction])
                for name, value in counters.get("gauges", {}).items():
                    gauges.add_metric([pipeline.id, component_id, name], value)
        yield from families.values()
        yield in_flight
        yield eps
        yield component
        yield gauges
        connections = GaugeMetricFamily("bspump_connection_ready", "1 while the connection is ready",
                                        labels=["connection"])
        for connection in self.app.pump_service.connections.values():
            connections.add_metric([connection.id], 1.0 if connection.ready else 0.0)
        yield connections


class WebServer:
    """Serves ``/metrics`` (Prometheus text), ``/health`` (no pipeline failed) and ``/ready``
    (every connection ready and no pipeline paused for a reason other than backpressure)."""

    ConfigDefaults = {"listen": ""}

    def __init__(self, app: BSPumpApplication, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(PipelineCollector(app))
        self._server: asyncio.Server | None = None

    @classmethod
    def from_config(cls, app: BSPumpApplication) -> WebServer | None:
        """A server if ``[web] listen = HOST:PORT`` is set, else ``None``."""
        section = app.config.section("web")
        config = ComponentConfig(cls.ConfigDefaults, section, label="web")
        listen = str(config.get("listen") or "").strip()
        if not listen:
            return None
        host, sep, port_text = listen.rpartition(":")
        if not sep or not port_text.isdigit():
            raise config.error("listen", f"expected HOST:PORT, got {listen!r}")
        return cls(app, host.strip("[]") or "127.0.0.1", int(port_text))

    async def start(self) -> None:
        """Start listening."""
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        sockets = self._server.sockets or ()
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("web endpoint on http://%s:%d (/metrics, /health, /ready)", self.host, self.port)

    async def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def health(self) -> tuple[int, dict[str, object]]:
        """200 unless a pipeline failed."""
        failed = [p.id for p in self.app.pump_service.pipelines.values() if p.state is PipelineState.FAILED]
        return (503 if failed else 200), {"status": "failed" if failed else "ok", "failed_pipelines": failed}

    def readiness(self) -> tuple[int, dict[str, object]]:
        """200 when every connection is ready and every pipeline runs (backpressure does not count)."""
        service = self.app.pump_service
        waiting_connections = [c.id for c in service.connections.values() if not c.ready]
        not_running = {
            p.id: p.state.value if p.state is not PipelineState.RUNNING else sorted(p.throttles - {"in flight"})
            for p in service.pipelines.values()
            if p.state is not PipelineState.RUNNING or (p.throttles - {"in flight"})
        }
        ready = not waiting_connections and not not_running
        body = {"ready": ready, "connections_not_ready": waiting_connections, "pipelines_not_ready": not_running}
        return (200 if ready else 503), body

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), 10)
            while (await asyncio.wait_for(reader.readline(), 10)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request_line.decode("latin-1").split()
            method, path = (parts[0], parts[1].split("?", 1)[0]) if len(parts) >= 2 else ("", "")
            if method not in ("GET", "HEAD"):
                status, content_type, body = 405, "text/plain", b"method not allowed\n"
            elif path == "/metrics":
                status, content_type, body = 200, "text/plain; version=0.0.4", generate_latest(self.registry)
            elif path in ("/health", "/ready"):
                status, payload = self.health() if path == "/health" else self.readiness()
                content_type, body = "application/json", orjson.dumps(payload)
            else:
                status, content_type, body = 404, "text/plain", b"not found; try /metrics, /health, /ready\n"
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}[status]
            head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
            writer.write(head.encode("latin-1") + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
