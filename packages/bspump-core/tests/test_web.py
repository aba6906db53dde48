"""The ``[web]`` endpoint: Prometheus /metrics, /health and /ready while the application runs."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import CountingSource, SlowSink, make_app, run_app, wait_for, write_conf

import bspump


async def http_get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert int(headers["Content-Length"]) == len(body) or method == "HEAD"
    return status, headers, body


class GatedConnection(bspump.Connection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()

    async def connect(self) -> None:
        await self.gate.wait()


async def test_metrics_health_and_ready(tmp_path: Path) -> None:
    app = make_app(write_conf(tmp_path, "[web]\nlisten = 127.0.0.1:0\n"))
    assert app.web is not None
    svc = app.get_service("bspump.PumpService")
    conn = svc.add_connection(GatedConnection(app, "DB"))

    class Double(bspump.Processor):
        def process(self, context: dict[str, Any], event: Any) -> Any:
            return event * 2

        def gauges(self) -> dict[str, float]:
            return {"factor": 2.0}

    p = bspump.Pipeline(app, "Events", config={"max_in_flight": 50})
    p.build(CountingSource(app, p, connection="DB"), Double(app, p), SlowSink(app, p, delay=0.001, connection="DB"))
    svc.add_pipeline(p)
    runner = asyncio.create_task(run_app(app))
    await wait_for(lambda: app.web._server is not None)
    port = app.web.port
    assert port > 0

    status, _, body = await http_get(port, "/ready")
    assert status == 503
    payload = json.loads(body)
    assert payload["ready"] is False and payload["connections_not_ready"] == ["DB"]
    assert payload["pipelines_not_ready"] == {"Events": ["connection DB"]}
    status, _, body = await http_get(port, "/health")
    assert status == 200 and json.loads(body)["status"] == "ok"

    conn.gate.set()
    await wait_for(lambda: len(p.sink.written) >= 100)
    status, _, body = await http_get(port, "/ready")
    assert status == 200, body  # backpressure ("in flight") does not make the app unready
    status, headers, body = await http_get(port, "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    match = re.search(r'^bspump_pipeline_events_in_total\{pipeline="Events"\} (\d+(?:\.\d+)?)$', text, re.M)
    assert match and float(match.group(1)) >= 100
    assert 'bspump_pipeline_in_flight{pipeline="Events"}' in text
    assert 'bspump_component_events_total{component="Double",direction="in",pipeline="Events"}' in text
    assert 'bspump_connection_ready{connection="DB"} 1.0' in text
    assert 'bspump_component_gauge{component="Double",name="factor",pipeline="Events"} 2.0' in text
    assert p.metrics()["components"]["Double"]["gauges"] == {"factor": 2.0}
    assert "gauges" not in p.metrics()["components"]["SlowSink"]  # reports none

    status, _, body = await http_get(port, "/nope")
    assert status == 404
    status, _, _ = await http_get(port, "/metrics", method="POST")
    assert status == 405
    status, _, body = await http_get(port, "/health", method="HEAD")
    assert status == 200 and body == b""

    app.stop()
    assert await runner == 0
    with pytest.raises(OSError):
        await http_get(port, "/health")


async def test_health_reports_a_failed_pipeline(tmp_path: Path) -> None:
    app = make_app(write_conf(tmp_path, "[web]\nlisten = 127.0.0.1:0\n"))

    class Boom(bspump.Processor):
        def process(self, context: dict[str, Any], event: Any) -> Any:
            raise ValueError("boom")

    p = bspump.Pipeline(app, "P")
    p.build(bspump.MemorySource(app, p, events=[1]), Boom(app, p), bspump.MemorySink(app, p))
    app.get_service("bspump.PumpService").add_pipeline(p)
    assert await run_app(app) == 1
    status, body = app.web.health()
    assert status == 503 and body["failed_pipelines"] == ["P"]


def test_web_listen_errors(tmp_path: Path) -> None:
    assert make_app().web is None
    with pytest.raises(bspump.ConfigError, match=r"\[web\] listen: expected HOST:PORT, got 'localhost'"):
        make_app(write_conf(tmp_path, "[web]\nlisten = localhost\n"))
