"""Standard input and output, one event per line."""

from __future__ import annotations

import logging
import stat
import sys
from typing import Any, ClassVar

from .. import context as keys
from ..batch import Batch
from ..config import Choice
from ..sink import Sink
from ..source import Source
from .checks import FORMATS, check_line_encoding
from .codec import encode_line
from .lines import BATCH_SIZE, MAX_LINE_BYTES, Item, LineDecoder, LineSplitter
from .reading import ByteReader

log = logging.getLogger("bspump.source")


class StdinSource(Source):
    """Reads lines from standard input (``format = text`` or ``json``) until end of input.

    Standard input may be a pipe, a terminal or a file. A pipe or terminal is read when the event loop
    says it is readable, so stop interrupts a wait for input (a thread blocked in ``readline()`` could not
    be); a file is read in a thread of the source's own. Each read's lines are emitted at once (a line
    typed on a terminal is an event when Enter is pressed), in batches of at most ``batch_size``.

    Lines that do not decode (invalid JSON, bytes that are not ``encoding``) and lines longer than
    ``max_line_bytes`` meet the pipeline's error policy with ``line`` and ``offset`` in their context;
    memory stays bounded whatever the input. The last line needs no newline.
    """

    ConfigDefaults: ClassVar[dict[str, Any]] = {
        "format": Choice("text", FORMATS),
        "batch_size": BATCH_SIZE,
        "encoding": "utf-8",
        "skip_empty": False,
        "max_line_bytes": MAX_LINE_BYTES,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.format = self.Config.getchoice("format")
        self.batch_size = self.Config.getint("batch_size")
        self.max_line_bytes = self.Config.getint("max_line_bytes")
        self.decoder = LineDecoder(self.format, check_line_encoding(self), self.Config.getboolean("skip_empty"),
                                   self.max_line_bytes)
        self._context = {keys.SOURCE: "stdin"}

    async def main(self) -> None:
        stream = sys.stdin
        if stream is None or stream.closed:
            return  # no standard input at all: nothing to read
        reader = ByteReader(stream.fileno(), name=self.qualified_id, owned=False)
        log.info("%s: reading standard input (%s)", self.qualified_id, _kind(reader.info.st_mode))
        splitter = LineSplitter(self.max_line_bytes)
        offset = count = 0
        try:
            while chunk := await reader.read():
                offset, count = await self._emit(splitter.feed(chunk), offset, count, splitter.marked)
            await self._emit(splitter.finish(), offset, count, splitter.marked)
        finally:
            reader.close()

    async def _emit(self, items: list[Item], offset: int, count: int, marked: bool) -> tuple[int, int]:
        size = self.batch_size
        for first in range(0, len(items), size):
            part = items if len(items) <= size else items[first:first + size]
            decoded = self.decoder.decode_items(part, offset, count, marked)
            for number, at, raw, error in decoded.rejects:
                self.pipeline.reject(self, {**self._context, keys.LINE: number, keys.OFFSET: at}, raw, error)
            if decoded.events:
                await self.emit(decoded.events, self._context)
            offset, count = decoded.offset, decoded.count
        return offset, count


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "a file"
    if stat.S_ISFIFO(mode):
        return "a pipe"
    if stat.S_ISCHR(mode):
        return "a terminal or device"
    return "a socket" if stat.S_ISSOCK(mode) else "another kind of file"


class StdoutSink(Sink):
    """Writes each event as a line to standard output (``format = json`` or ``text``)."""

    ConfigDefaults: ClassVar[dict[str, Any]] = {"format": Choice("json", FORMATS)}

    def put(self, batch: Batch) -> None:
        fmt = self.Config.getchoice("format")
        out = sys.stdout.buffer
        out.write(b"".join(encode_line(event, fmt, context) for context, event in batch))
        out.flush()
        batch.ack(len(batch.events))
