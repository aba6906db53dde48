"""The ``[web]`` endpoint of a real ``bspump run`` with few file descriptors (issue 9, defect 5): held
connections do not starve ``/health``, running out of descriptors gives a rate-limited line instead of a
traceback per accept, and the endpoint serves again once descriptors are free."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from conftest import write_conf
from test_web import ANSWER_TIMEOUT, http_get, read_to_end

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_NOFILE is POSIX")

#: ``bspump --log-level INFO run --no-progress CONF`` with at most ``argv[1]`` file descriptors.
RUN_WITH_FEW_DESCRIPTORS = """
import resource, sys
limit = int(sys.argv.pop(1))
resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
from bspump.cli import main
sys.exit(main(["--log-level", "INFO", "run", "--no-progress", *sys.argv[1:]]))
"""

#: Runs the application of ``argv[1]`` with 64 descriptors, uses them all up once the endpoint listens,
#: prints the port, then "starved" once the endpoint failed to accept 3 times, and frees them on SIGUSR1.
STARVE_THEN_FREE = """
import asyncio, logging, os, resource, signal, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
import bspump

async def main():
    app = bspump.BSPumpApplication(sys.argv[1], environ={}, load_plugins=False)
    runner = asyncio.create_task(app.run_async())
    while not app.web.listening:
        await asyncio.sleep(0.01)
    freed = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, freed.set)
    taken = []
    try:
        while True:
            taken.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        pass
    print(app.web.port, flush=True)
    while app.web.stats.accept_failures < 3:
        await asyncio.sleep(0.01)
    print("starved", flush=True)
    await freed.wait()
    for fd in taken:
        os.close(fd)
    return await runner

sys.exit(asyncio.run(main()))
"""

#: A prober: ``GET argv[2]`` on 127.0.0.1:``argv[1]``; the raw answer on stdout.
PROBE = f"""
import socket, sys
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout={ANSWER_TIMEOUT}) as sock:
    sock.sendall(f"GET {{sys.argv[2]}} HTTP/1.1\\r\\nHost: localhost\\r\\n\\r\\n".encode())
    while chunk := sock.recv(65536):
        sys.stdout.buffer.write(chunk)
"""

#: The most the child may write to stderr: a handful of lines (the unfixed endpoint wrote 32 MB in 27 s).
STDERR_BUDGET = 2000


async def probe(port: int, path: str) -> bytes:
    """The answer to a request from a process of its own, as an orchestrator's prober is: it sends the
    request the moment it is connected, whatever the attack does to the test's event loop."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-I", "-c", PROBE, str(port), path, stdout=asyncio.subprocess.PIPE)
    answer, _ = await asyncio.wait_for(process.communicate(), ANSWER_TIMEOUT + 10)  # + the interpreter's start
    return answer


class Child:
    """A child process whose stderr is collected in the background (a flood must not block it)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.stderr = bytearray()
        self.port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._collecting = asyncio.create_task(self._collect())

    async def _collect(self) -> None:
        assert self.process.stderr is not None
        async for line in self.process.stderr:
            if len(self.stderr) < 1_000_000:
                self.stderr += line
            found = re.search(rb"web endpoint on http://127\.0\.0\.1:(\d+)", line)
            if found and not self.port.done():
                self.port.set_result(int(found.group(1)))

    async def stdout_line(self) -> bytes:
        assert self.process.stdout is not None
        return await asyncio.wait_for(self.process.stdout.readline(), 10)

    async def stop(self) -> int:
        """SIGTERM (a graceful stop), then the exit code; the stderr is complete afterwards."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self.process.wait(), 15)
        finally:
            if self.process.returncode is None:
                self.process.kill()
                await self.process.wait()
        await asyncio.wait_for(self._collecting, 5)
        return code


@asynccontextmanager
async def child(*args: str) -> AsyncIterator[Child]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    running = Child(process)
    try:
        yield running
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def hold_connections(port: int, count: int) -> list[asyncio.StreamWriter]:
    """``count`` slowloris connections: each sends part of a request head, then nothing more."""
    held = []
    for _ in range(count):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
        held.append(writer)
    return held


@pytest.mark.parametrize(("descriptors", "web_keys", "attackers"), [
    (256, "", 300),  # the reproduction: the cap keeps the endpoint far from the limit
    (64, "max_connections = 1000\n", 120),  # a cap above the limit: the endpoint runs out of descriptors
])
async def test_held_connections_with_few_descriptors_do_not_starve_health(
        tmp_path: Path, descriptors: int, web_keys: str, attackers: int) -> None:
    conf = write_conf(tmp_path, f"[web]\nlisten = 127.0.0.1:0\n{web_keys}")
    # A Python target: an application that serves only the endpoint keeps running (a configuration file
    # without a pipeline is an error of `bspump run`).
    target = tmp_path / "app.py"
    target.write_text(f"import bspump\napp = bspump.BSPumpApplication({str(conf)!r}, load_plugins=False)\n")
    async with child(RUN_WITH_FEW_DESCRIPTORS, str(descriptors), str(target)) as run:
        port = await asyncio.wait_for(run.port, 10)
        held = await asyncio.wait_for(hold_connections(port, attackers), 10)
        try:
            for _ in range(3):
                answer = await probe(port, "/health")
                assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b'"failed_pipelines":[]}')
        finally:
            for writer in held:
                writer.close()
        assert await run.stop() == 0
    stderr = run.stderr.decode(errors="replace")
    assert b"Traceback" not in run.stderr, stderr[:3000]
    assert len(run.stderr) < STDERR_BUDGET, stderr[:3000]
    if descriptors == 64:
        lines = [line for line in stderr.splitlines() if "out of file descriptors" in line]
        assert 1 <= len(lines) <= 2, stderr


async def test_the_endpoint_serves_again_once_descriptors_are_free(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, "[web]\nlisten = 127.0.0.1:0\n")
    async with child(STARVE_THEN_FREE, str(conf)) as run:
        port = int(await run.stdout_line())
        # Connected by the kernel, but the endpoint cannot accept it: no descriptor is left.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /health HTTP/1.1\r\n\r\n")
        assert await run.stdout_line() == b"starved\n"
        run.process.send_signal(signal.SIGUSR1)
        answer = await read_to_end(reader)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b'"failed_pipelines":[]}')
        status, _, _ = await http_get(port, "/health")
        assert status == 200
        assert await run.stop() == 0
    stderr = run.stderr.decode(errors="replace")
    assert "Traceback" not in stderr and len(run.stderr) < STDERR_BUDGET, stderr[:3000]
    lines = [line for line in stderr.splitlines() if "out of file descriptors" in line]
    assert 1 <= len(lines) <= 2, stderr
    assert "Too many open files" in lines[0]
