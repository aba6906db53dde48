"""A scripted MQTT broker on loopback for unit tests: it speaks the few packets a test needs, byte by byte,
so that the tests see exactly what the client sends (and when) without a real server."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 12, 13, 14


@dataclass
class Packet:
    kind: int
    flags: int
    body: bytes

    @property
    def mid(self) -> int:
        """The packet id of a PUBACK, PUBREC, PUBREL, PUBCOMP or SUBSCRIBE."""
        return int.from_bytes(self.body[:2], "big")


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([(kind << 4) | flags]) + _length(len(body)) + body


class FakeBroker:
    """Accepts clients one after another; the test reads the current client's packets with :meth:`read`,
    answers with :meth:`send`, drops the link with :meth:`drop` and takes the next client with
    :meth:`next_client`."""

    def __init__(self, v5: bool) -> None:
        self.v5 = v5
        self.port = 0
        self._server: asyncio.Server | None = None
        self._accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        self._current: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def __aenter__(self) -> FakeBroker:
        def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._accepted.put_nowait((reader, writer))

        self._server = await asyncio.start_server(accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        if self._current is not None:
            self._current[1].close()
        self._server.close()

    async def next_client(self) -> None:
        """Wait for the next client to connect and talk to it from now on."""
        self._current = await asyncio.wait_for(self._accepted.get(), 10)

    def drop(self) -> None:
        """Close the current client's link, as a broker that goes away does."""
        assert self._current is not None
        self._current[1].close()
        self._current = None

    async def read(self) -> Packet:
        """The current client's next packet (PINGREQs are answered and skipped)."""
        if self._current is None:
            await self.next_client()
        assert self._current is not None
        reader = self._current[0]
        while True:
            header = (await asyncio.wait_for(reader.readexactly(1), 10))[0]
            length, shift = 0, 0
            while True:
                byte = (await reader.readexactly(1))[0]
                length += (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            body = await reader.readexactly(length)
            found = Packet(header >> 4, header & 0x0F, body)
            if found.kind == PINGREQ:
                self.send(packet(PINGRESP, 0, b""))
                continue
            return found

    def send(self, data: bytes) -> None:
        assert self._current is not None
        self._current[1].write(data)

    # -- the packets a test sends --------------------------------------------------------------------------------
    def connack(self, session_present: bool) -> bytes:
        body = bytes([1 if session_present else 0, 0])
        return packet(CONNACK, 0, body + (b"\x00" if self.v5 else b""))

    def suback(self, mid: int, granted: list[int]) -> bytes:
        return packet(SUBACK, 0, mid.to_bytes(2, "big") + (b"\x00" if self.v5 else b"") + bytes(granted))

    def publish(self, topic: str, payload: bytes, qos: int, mid: int) -> bytes:
        name = topic.encode()
        body = len(name).to_bytes(2, "big") + name + (mid.to_bytes(2, "big") if qos else b"")
        return packet(PUBLISH, qos << 1, body + (b"\x00" if self.v5 else b"") + payload)

    def pubrel(self, mid: int) -> bytes:
        return packet(PUBREL, 0x02, mid.to_bytes(2, "big"))
