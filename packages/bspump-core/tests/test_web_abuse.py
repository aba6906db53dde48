"""The ``[web]`` endpoint under abuse (issue 9, defect 5): held connections, slow and oversized heads,
malformed requests and failing collectors neither starve ``/health`` nor flood the log."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from test_web import ANSWER_TIMEOUT, exchange, http_get, read_to_end, running_web, status_of


def web_records(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "bspump.web" and r.levelno >= level]


async def test_connections_beyond_the_cap_close_the_oldest_and_health_still_answers(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with running_web(tmp_path, "max_connections = 8\n") as app:
        port = app.web.port
        held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        try:
            for _ in range(20):  # slowloris: a request that never ends
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET /health HTTP/1.1\r\nX-Slow: ")
                held.append((reader, writer))
            status, _, body = await http_get(port, "/health")
            assert status == 200 and b'"ok"' in body
            # 21 connections for 8 places: the 13 oldest were closed, oldest first, well before the head deadline.
            for reader, _ in held[:13]:
                assert await read_to_end(reader) == b""
            assert app.web.stats.evicted_connections == 13
        finally:
            for _, writer in held:
                writer.close()
    cap_lines = [r for r in web_records(caplog) if "holds its maximum of 8 connections" in r.getMessage()]
    assert len(cap_lines) == 2  # the first eviction, then at stop the 12 that followed as one line
    assert "(12 more like this in the last" in cap_lines[1].getMessage()


async def test_a_burst_of_connections_does_not_evict_a_request_already_there(tmp_path: Path) -> None:
    async with running_web(tmp_path, "max_connections = 4\n") as app:
        # Blocking sockets: all of these wait in the listen backlog before the endpoint accepts any.
        prober = socket.create_connection(("127.0.0.1", app.web.port))
        prober.sendall(b"GET /health HTTP/1.1\r\n\r\n")
        burst = [socket.create_connection(("127.0.0.1", app.web.port)) for _ in range(10)]
        try:
            for sock in burst:
                sock.sendall(b"GET /health HTTP/1.1\r\nX-Slow: ")
            reader, writer = await asyncio.open_connection(sock=prober)
            answer = await read_to_end(reader)
            writer.close()
            assert status_of(answer) == 200
        finally:
            for sock in burst:
                sock.close()


async def test_a_70kb_request_line_gets_414_and_nothing_is_logged_at_error(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with running_web(tmp_path) as app:
        answer = await exchange(app.web.port, b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status_of(answer) == 414
        assert answer.endswith(b"request line over 8192 bytes\n")
        headers = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 60) for i in range(200))
        answer = await exchange(app.web.port, b"GET /health HTTP/1.1\r\n" + headers + b"\r\n")
        assert status_of(answer) == 431
        status, _, _ = await http_get(app.web.port, "/health")
        assert status == 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert all(r.exc_info is None for r in caplog.records)


@pytest.mark.parametrize("head", [
    b"nonsense\r\n\r\n",
    b"GET /health\r\n\r\n",
    b"GET /health HTTP/1.1 extra\r\n\r\n",
    b"GET /health HTTP/1.1\r\nno colon here\r\n\r\n",
    b"GET /health HTTP/1.1\r\n: no name\r\n\r\n",
    b"\x00\xff\xfe\r\n\r\n",
])
async def test_a_malformed_request_gets_400(tmp_path: Path, head: bytes) -> None:
    async with running_web(tmp_path) as app:
        assert status_of(await exchange(app.web.port, head)) == 400


@pytest.mark.parametrize("head", [
    b"GET /health HTTP/1.1\nHost: x\n\n",
    b"GET /health HTTP/1.0\r\nHost: x\n\r\n",
    b"\r\nGET /health?verbose=1 HTTP/1.1\r\n\r\n",
])
async def test_lenient_but_valid_requests_are_served(tmp_path: Path, head: bytes) -> None:
    async with running_web(tmp_path) as app:
        assert status_of(await exchange(app.web.port, head)) == 200


async def test_a_flood_of_bad_requests_logs_one_line_with_a_count(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with running_web(tmp_path) as app:
        for _ in range(50):
            assert status_of(await exchange(app.web.port, b"nonsense\r\n\r\n")) == 400
        assert len(web_records(caplog)) == 1  # the first; the others are counted
    lines = [r.getMessage() for r in web_records(caplog)]
    assert len(lines) == 2, lines
    assert lines[0].startswith("web endpoint answered 400 to 127.0.0.1:") and lines[0].endswith(
        ": malformed request line")
    assert "(49 more like this in the last" in lines[1]  # written at stop


async def test_a_slowloris_is_answered_408_and_closed_at_the_head_deadline(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with running_web(tmp_path) as app:
        app.web.head_timeout = 0.5
        reader, writer = await asyncio.open_connection("127.0.0.1", app.web.port)

        async def trickle() -> None:
            # One complete header line at a time, each well within any per-line timeout.
            writer.write(b"GET /health HTTP/1.1\r\n")
            while True:
                writer.write(b"X-Slow: 1\r\n")
                await writer.drain()
                await asyncio.sleep(0.05)

        trickling = asyncio.create_task(trickle())
        try:
            answer = await read_to_end(reader, timeout=ANSWER_TIMEOUT)
        finally:
            trickling.cancel()
            await asyncio.gather(trickling, return_exceptions=True)
            writer.close()
        assert status_of(answer) == 408
        assert answer.endswith(b"request head not complete within 0.5 s\n")
        assert app.web.stats.rejected_requests == {408: 1}
    assert any("answered 408" in r.getMessage() for r in web_records(caplog))


async def test_an_idle_connection_is_closed_quietly_at_the_head_deadline(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with running_web(tmp_path) as app:
        app.web.head_timeout = 0.5
        reader, writer = await asyncio.open_connection("127.0.0.1", app.web.port)
        try:
            assert await read_to_end(reader) == b""
        finally:
            writer.close()
    assert web_records(caplog) == []  # a preconnect that was never used is nothing to warn about


class BrokenCollector(Collector):
    """A plugin's collector with a defect; its message holds a value the application masks."""

    def collect(self) -> Iterator[Metric]:
        raise RuntimeError("cannot read gauge with token hunter2")


async def test_a_failing_collector_gets_500_and_one_line_without_traceback(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with running_web(tmp_path) as app:
        app.web.registry.register(BrokenCollector())
        app.web.mask = lambda text: text.replace("hunter2", "***")
        for _ in range(3):
            status, _, _ = await http_get(app.web.port, "/metrics")
            assert status == 500
        status, _, _ = await http_get(app.web.port, "/health")
        assert status == 200
        errors = web_records(caplog, logging.ERROR)
        assert [r.getMessage() for r in errors] == [
            "web endpoint failed to answer /metrics: RuntimeError: cannot read gauge with token ***"]
        assert errors[0].exc_info is None
