"""Just enough HTTP/1.1 for probes and scrapers: read a request head within a size limit, parse it,
and format a ``Connection: close`` response. No keep-alive, no request bodies."""

from __future__ import annotations

import asyncio
import re
import socket
from dataclasses import dataclass
from typing import Final

__all__ = ["REASONS", "Request", "RequestRejected", "format_response", "parse_head", "read_head"]

REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}

_RECEIVE_SIZE: Final = 4096
_REQUEST_LINE: Final = re.compile(r"([A-Za-z]+) (\S+) HTTP/\d\.\d")
_HEADER_NAME: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BLANK_LINE: Final = re.compile(rb"\r?\n\r?\n")  # bare "\n" line ends are tolerated (RFC 9112, 2.2)


class RequestRejected(Exception):
    """A request the endpoint answers with the 4xx ``status``; ``reason`` says why, in a few words."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Request:
    """What the endpoint needs of a request: its method and the path without the query."""

    method: str
    path: str


async def read_head(sock: socket.socket, received: bytearray, max_bytes: int) -> bytes | None:
    """Receive until the blank line that ends the request head; return the head without it.

    Bytes are collected in ``received`` (so that a caller whose deadline expired can tell an idle
    connection from a slow one). ``None`` when the client closes before the head is complete.
    Raises :class:`RequestRejected` with 414 for a request line longer than ``max_bytes`` and 431 for a
    longer head, as soon as that many bytes arrived: nothing beyond the limit is ever buffered.
    """
    loop = asyncio.get_running_loop()
    while True:
        chunk = await loop.sock_recv(sock, _RECEIVE_SIZE)
        if not chunk:
            return None
        received.extend(chunk)
        blank_line = _BLANK_LINE.search(received)
        end = -1 if blank_line is None else blank_line.start()
        head_size = len(received) if end < 0 else end
        line_end = received.find(b"\n", 0, head_size)
        if (line_end < 0 and head_size > max_bytes) or line_end > max_bytes:
            raise RequestRejected(414, f"request line over {max_bytes} bytes")
        if head_size > max_bytes:
            raise RequestRejected(431, f"request head over {max_bytes} bytes")
        if end >= 0:
            return bytes(received[:end])


def parse_head(head: bytes) -> Request:
    """The request a head asks for; :class:`RequestRejected` (400) when the head is not HTTP/1.x."""
    # Leading blank lines are allowed before the request line (RFC 9112, 2.2).
    lines = head.decode("latin-1").lstrip("\r\n").split("\n")
    match = _REQUEST_LINE.fullmatch(lines[0].removesuffix("\r"))
    if match is None:
        raise RequestRejected(400, "malformed request line")
    for line in lines[1:]:
        name, colon, _ = line.partition(":")
        if not colon or _HEADER_NAME.fullmatch(name) is None:
            raise RequestRejected(400, "malformed header line")
    method, target = match.groups()
    return Request(method, target.split("?", 1)[0])


def format_response(status: int, content_type: str, body: bytes, *, head_only: bool = False) -> bytes:
    """A complete response that closes the connection; ``head_only`` leaves out the body (HEAD)."""
    head = (f"HTTP/1.1 {status} {REASONS[status]}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode("latin-1") + (b"" if head_only else body)
