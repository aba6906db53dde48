"""What ``/metrics`` reports: the pipelines' counters and the endpoint's own, read only when scraped."""

from __future__ import annotations

from collections.abc import Iterator, Sized
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from ..application import BSPumpApplication


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


@dataclass
class EndpointStats:
    """What the endpoint did to protect itself; rate-limited log lines leave the full counts here."""

    evicted_connections: int = 0
    accept_failures: int = 0
    rejected_requests: dict[int, int] = field(default_factory=dict)

    def rejected(self, status: int) -> None:
        """Count one request answered with the error ``status`` (400, 408, 414, 431)."""
        self.rejected_requests[status] = self.rejected_requests.get(status, 0) + 1


class EndpointCollector(Collector):
    """Reads :class:`EndpointStats` and the number of open connections when Prometheus scrapes."""

    def __init__(self, stats: EndpointStats, open_connections: Sized) -> None:
        self.stats = stats
        self.open_connections = open_connections

    def collect(self) -> Iterator[Metric]:
        stats = self.stats
        yield GaugeMetricFamily("bspump_web_connections_open", "Connections the web endpoint holds open",
                                value=len(self.open_connections))
        yield CounterMetricFamily("bspump_web_connections_evicted", "Connections closed to make room for new ones",
                                  value=stats.evicted_connections)
        yield CounterMetricFamily("bspump_web_accept_failures", "Connections the endpoint failed to accept "
                                  "(e.g. out of file descriptors)", value=stats.accept_failures)
        rejected = CounterMetricFamily("bspump_web_requests_rejected", "Requests answered with a 4xx for being "
                                       "malformed, too large or too slow", labels=["status"])
        for status, count in sorted(stats.rejected_requests.items()):
            rejected.add_metric([str(status)], count)
        yield rejected
