"""Standard input and output, one event per line."""

from __future__ import annotations

import asyncio
import sys
from typing import Any, ClassVar

from ..batch import Batch
from ..sink import Sink
from ..source import Source
from .codec import FORMATS, decode_line, encode_line


class StdinSource(Source):
    """Reads lines from standard input (``format = text`` or ``json``) until end of input."""

    ConfigDefaults: ClassVar[dict[str, Any]] = {"format": "text", "batch_size": 1000}

    async def main(self) -> None:
        fmt = str(self.Config.get("format")).lower()
        if fmt not in FORMATS:
            raise self.Config.error("format", f"expected one of {', '.join(FORMATS)}, got {fmt!r}")
        interactive = sys.stdin.isatty()
        size = 1 if interactive else self.Config.getint("batch_size")
        context = {"source": "stdin"}
        number = 0
        while True:
            lines = await asyncio.to_thread(_read, size)
            if not lines:
                return
            events = []
            for line in lines:
                number += 1
                text = line.rstrip("\r\n")
                try:
                    events.append(decode_line(text, fmt))
                except ValueError as exc:
                    self.pipeline.reject(self, {"source": "stdin", "line": number}, text, exc)
            if events:
                await self.emit(events, context)


def _read(count: int) -> list[str]:
    lines = []
    for _ in range(count):
        line = sys.stdin.readline()
        if not line:
            break
        lines.append(line)
    return lines


class StdoutSink(Sink):
    """Writes each event as a line to standard output (``format = json`` or ``text``)."""

    ConfigDefaults: ClassVar[dict[str, Any]] = {"format": "json"}

    def put(self, batch: Batch) -> None:
        fmt = str(self.Config.get("format")).lower()
        out = sys.stdout.buffer
        out.write(b"".join(encode_line(event, fmt, context) for context, event in batch))
        out.flush()
        batch.ack(len(batch.events))
