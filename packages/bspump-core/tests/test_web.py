"""The ``[web]`` endpoint: Prometheus /metrics, /health and /ready while the application runs."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import CountingSource, SlowSink, make_app, run_app, wait_for, write_conf
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

import bspump
from bspump.web import WebServer

#: Upper bound for any answer the endpoint owes a client in these tests.
ANSWER_TIMEOUT = 5.0


async def exchange(port: int, request: bytes, timeout: float = ANSWER_TIMEOUT) -> bytes:
    """Send ``request`` as it is and return everything the server sent until it closed the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await read_to_end(reader, timeout)
    finally:
        writer.close()


async def read_to_end(reader: asyncio.StreamReader, timeout: float = ANSWER_TIMEOUT) -> bytes:
    """What arrives until the server closes; a reset after part of an answer keeps that part."""
    received = bytearray()
    async with asyncio.timeout(timeout):
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    return bytes(received)


def status_of(answer: bytes) -> int:
    """The status code of a raw HTTP answer (``AssertionError`` when there is none)."""
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer.split(b" ", 2)[1])


async def http_get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of a well-formed request."""
    raw = await exchange(port, f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert int(headers["Content-Length"]) == len(body) or method == "HEAD"
    return status, headers, body


@asynccontextmanager
async def running_web(tmp_path: Path, web_keys: str = "") -> AsyncIterator[bspump.BSPumpApplication]:
    """An application with ``[web] listen = 127.0.0.1:0`` (plus ``web_keys``) running until the block ends."""
    app = make_app(write_conf(tmp_path, f"[web]\nlisten = 127.0.0.1:0\n{web_keys}"))
    runner = asyncio.create_task(run_app(app, timeout=60))
    try:
        await wait_for(lambda: runner.done() or (app.web is not None and app.web.listening))
        if runner.done():
            await runner  # raises what made the start fail
        yield app
    finally:
        app.stop()
        assert await runner == 0


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
    await wait_for(lambda: app.web.listening)
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


def test_web_key_ranges(tmp_path: Path) -> None:
    with pytest.raises(bspump.ConfigError,
                       match=r"pipelines.conf:2 \[web\] listen: port 99999 is out of range 0-65535"):
        make_app(write_conf(tmp_path, "[web]\nlisten = 127.0.0.1:99999\n"))
    for value in ("0", "4097", "-1"):
        with pytest.raises(bspump.ConfigError,
                           match=rf"pipelines.conf:3 \[web\] max_connections: expected an integer from 1 to 4096, "
                                 rf"got '{value}'"):
            make_app(write_conf(tmp_path, f"[web]\nlisten = 127.0.0.1:0\nmax_connections = {value}\n"))
    app = make_app(write_conf(tmp_path, "[web]\nlisten = 127.0.0.1:0\nmax_connections = 4096\n"))
    assert app.web is not None and app.web.max_connections == 4096
    assert make_app(write_conf(tmp_path, "[web]\nlisten = 127.0.0.1:0\n")).web.max_connections == 64


async def test_a_port_in_use_is_a_one_line_error_naming_web_listen(tmp_path: Path) -> None:
    async with running_web(tmp_path) as first:
        port = first.web.port
        second = make_app(write_conf(tmp_path, f"[web]\nlisten = 127.0.0.1:{port}\n", name="second.conf"))
        with pytest.raises(bspump.ConfigError,
                           match=rf"second.conf:2 \[web\] listen: cannot listen on 127.0.0.1:{port}: "
                                 r"address already in use$"):
            await run_app(second)
        status, _, _ = await http_get(port, "/health")  # the first one is unharmed
        assert status == 200


class CountingCollector(Collector):
    """A collector a plugin could register; counts how often Prometheus asked it for values."""

    def __init__(self) -> None:
        self.collected = 0

    def collect(self) -> Iterator[Metric]:
        self.collected += 1
        yield GaugeMetricFamily("test_collections", "How often this collector was read", value=self.collected)


async def test_metrics_are_rendered_once_per_cache_window(tmp_path: Path) -> None:
    async with running_web(tmp_path) as app:
        web = app.web
        collector = CountingCollector()
        web.registry.register(collector)
        web.metrics_max_age = 3600.0  # the whole test runs inside one window, however slow the machine
        bodies = {(await http_get(web.port, "/metrics"))[2] for _ in range(5)}
        assert collector.collected == 1
        assert len(bodies) == 1 and b"test_collections 1.0" in bodies.pop()

        web.metrics_max_age = 0.0  # the window is over: the next scrape renders again
        _, _, body = await http_get(web.port, "/metrics")
        assert collector.collected == 2 and b"test_collections 2.0" in body

        status, _, _ = await http_get(web.port, "/health")  # health is never served from the cache
        assert status == 200 and collector.collected == 2
    assert bspump.web.WebServer.metrics_max_age == 1.0  # the documented default


async def test_mask_hides_values_in_every_answer(tmp_path: Path) -> None:
    app = make_app(write_conf(tmp_path, "[web]\nlisten = 127.0.0.1:0\n"))
    svc = app.get_service("bspump.PumpService")
    svc.add_connection(GatedConnection(app, "DB-hunter2"))
    p = bspump.Pipeline(app, "P-hunter2")
    p.build(CountingSource(app, p, connection="DB-hunter2"), SlowSink(app, p, connection="DB-hunter2"))
    svc.add_pipeline(p)
    assert app.web is not None
    app.web.mask = lambda text: text.replace("hunter2", "***")
    runner = asyncio.create_task(run_app(app))
    await wait_for(lambda: app.web.listening)
    _, _, metrics = await http_get(app.web.port, "/metrics")
    assert b'pipeline="P-***"' in metrics and b'connection="DB-***"' in metrics
    status, _, ready = await http_get(app.web.port, "/ready")
    assert status == 503 and json.loads(ready)["connections_not_ready"] == ["DB-***"]
    assert b"hunter2" not in metrics + ready
    app.stop()
    assert await runner == 0
    assert WebServer(app, "127.0.0.1", 0).mask("a hunter2") == "a hunter2"  # identity by default


async def test_metrics_report_what_the_endpoint_did(tmp_path: Path) -> None:
    async with running_web(tmp_path) as app:
        port = app.web.port
        assert status_of(await exchange(port, b"nonsense\r\n\r\n")) == 400
        app.web.metrics_max_age = 0.0
        _, _, body = await http_get(port, "/metrics")
        text = body.decode()
        assert 'bspump_web_requests_rejected_total{status="400"} 1.0' in text
        assert "bspump_web_connections_open 1.0" in text  # the scrape itself
        assert "bspump_web_connections_evicted_total 0.0" in text
        assert "bspump_web_accept_failures_total 0.0" in text
