"""A stand-in for an Elasticsearch node: real HTTP on loopback, answering with recorded responses.

Each request is kept (method, path, query, body); ``answer`` decides the reply (status, JSON body). The
default answers cluster health and, for ``_bulk``, takes the next recorded response from ``bulk_replies``
(or acknowledges every action with 201).
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESPONSES = Path(__file__).parent / "responses"


def recorded(name: str) -> Any:
    """A recorded response of ``tests/responses/NAME.json``."""
    return json.loads((RESPONSES / f"{name}.json").read_text())


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: bytes

    def pairs(self) -> list[tuple[dict[str, Any], Any]]:
        """(action, document) of each action of a bulk body: the document parsed, the raw line when it is
        not JSON, None for a delete."""
        lines = [line for line in self.body.splitlines() if line.strip()]
        out, i = [], 0
        while i < len(lines):
            action = json.loads(lines[i])
            if "delete" in action:
                out.append((action, None))
                i += 1
                continue
            try:
                document = json.loads(lines[i + 1])
            except ValueError:
                document = lines[i + 1]
            out.append((action, document))
            i += 2
        return out

    def actions(self) -> list[dict[str, Any]]:
        return [action for action, _ in self.pairs()]

    def documents(self) -> list[Any]:
        return [document for action, document in self.pairs() if "delete" not in action]


def acknowledge(request: Request) -> dict[str, Any]:
    """What a node answers to a bulk request: 201 for each action, 400 for a document that is not JSON."""
    items = []
    for action, document in request.pairs():
        ((op, _),) = action.items()
        if isinstance(document, bytes):
            items.append({op: {"status": 400, "error": {"type": "document_parsing_exception",
                                                        "reason": "[1:1] failed to parse"}}})
        else:
            items.append({op: {"status": 201}})
    return {"errors": any("error" in next(iter(i.values())) for i in items), "items": items}


@dataclass
class FakeCluster:
    bulk_replies: list[tuple[int, Any]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    answer: Callable[[Request], tuple[int, Any]] | None = None
    server: asyncio.Server | None = None
    #: While set and not yet open, bulk requests wait for it before they are answered (``held`` counts them).
    gate: asyncio.Event | None = None
    held: int = 0

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    def bulks(self) -> list[Request]:
        return [r for r in self.requests if r.path.endswith("/_bulk")]

    async def __aenter__(self) -> FakeCluster:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    def reply(self, request: Request) -> tuple[int, Any]:
        if self.answer is not None:
            return self.answer(request)
        if request.path == "/_cluster/health":
            return 200, {"cluster_name": "fake", "status": "green"}
        if request.path.endswith("/_bulk"):
            if self.bulk_replies:
                return self.bulk_replies.pop(0)
            return 200, acknowledge(request)
        return 404, {"error": {"type": "not_found", "reason": request.path}, "status": 404}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                split = urllib.parse.urlsplit(target)
                request = Request(method, split.path, dict(urllib.parse.parse_qsl(split.query)), body)
                self.requests.append(request)
                if self.gate is not None and request.path.endswith("/_bulk") and not self.gate.is_set():
                    self.held += 1
                    await self.gate.wait()
                status, payload = self.reply(request)
                if status < 0:  # a node that dies mid-request: the connection closes without an answer
                    return
                data = json.dumps(payload).encode()
                writer.write(
                    f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\nx-elastic-product: Elasticsearch\r\n"
                    f"content-length: {len(data)}\r\n\r\n".encode() + data
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
