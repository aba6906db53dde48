"""What the MongoDB integration tests share: probing what a server supports, and small client helpers.

Each helper opens its own ``AsyncMongoClient`` in the running event loop (the conformance kit runs every test
in a fresh loop) and closes it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.errors import OperationFailure


@asynccontextmanager
async def mongo_client(uri: str, **options: Any) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    settings = {"serverSelectionTimeoutMS": 10_000, "tz_aware": True, **options}
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, **settings)
    try:
        yield client
    finally:
        await client.close()


async def change_stream_support(uri: str) -> str | None:
    """``None`` if the server has change streams, else why not (the server's own message)."""
    async with mongo_client(uri) as client:
        collection = client[f"bt_probe_{uuid.uuid4().hex[:8]}"]["probe"]
        try:
            stream = await collection.watch(max_await_time_ms=10)
            await stream.close()
        except OperationFailure as exc:
            return f"the server has no change streams ({exc.code}: {str(exc).split(', full error')[0]})"
        finally:
            await client.drop_database(collection.database.name)
    return None


async def validator_support(uri: str) -> bool:
    """Whether the server enforces collection validators (FerretDB 1.x answers NotImplemented)."""
    async with mongo_client(uri) as client:
        database = client[f"bt_probe_{uuid.uuid4().hex[:8]}"]
        try:
            await database.create_collection("probe", validator={"n": {"$gte": 0}})
        except OperationFailure:
            return False
        finally:
            await client.drop_database(database.name)
    return True


async def operation_time(uri: str, database: str) -> int:
    """The server's current cluster time, in seconds (a ``start_at`` for change streams)."""
    async with mongo_client(uri) as client:
        reply = await client[database].command("ping")
        ts = reply.get("operationTime") or reply["$clusterTime"]["clusterTime"]
        return int(ts.time)


def secantusd() -> Path | None:
    """The harness's SecantusDB launcher (``run.sh install secantusdb``), if installed on this machine."""
    cache = Path(os.environ.get("BSPUMP_CACHE_DIR") or Path.home() / ".cache" / "bspump")
    binary = cache / "venv" / "secantusdb" / "bin" / "secantusd-py"
    return binary if binary.is_file() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def private_secantusdb(folder: Path, *args: str, port: int | None = None,
                             **client_options: Any) -> AsyncIterator[int]:
    """A SecantusDB of the test's own (data in ``folder/data``, log in ``folder/secantusdb.log``) started with
    ``args``, on ``port`` (default: a free one); yields the port once ``ping`` answers (with
    ``client_options``), and stops it afterwards. The caller skips when :func:`secantusd` is ``None``."""
    binary = secantusd()
    assert binary is not None
    port = port or free_port()
    log = open(folder / "secantusdb.log", "ab")
    process = subprocess.Popen([str(binary), "--host", "127.0.0.1", "--port", str(port), "--storage-path",
                                str(folder / "data"), "--log-level", "WARNING", *args],
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                async with mongo_client(f"mongodb://127.0.0.1:{port}/?directConnection=true",
                                        serverSelectionTimeoutMS=1000, **client_options) as client:
                    await client.admin.command("ping")
                break
            except Exception:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the private SecantusDB did not start: "
                                       f"{(folder / 'secantusdb.log').read_text()[-2000:]}") from None
                await asyncio.sleep(0.2)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()
