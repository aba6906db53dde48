"""The contexts of one fetched batch, kept as columns and built into dictionaries only where read."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import bspump

_MILLISECONDS = operator.itemgetter(1)  # of a (type, milliseconds) pair


class KafkaContexts(bspump.LazyContexts):
    """``topic``, ``partition``, ``offset``, ``key``, ``timestamp`` (ms) and ``headers`` of each fetched record.

    Both backends fill the columns at C speed when they unpack a fetch; a context dictionary is built only
    when a processor, the sink or an error policy reads it (see :class:`bspump.LazyContexts`). The sink reads
    ``key`` and ``headers`` as columns. Columns rather than the client's record objects, so that a record's
    raw value is freed once decoded, as before. ``text_keys`` decodes keys as UTF-8 where they are read.
    ``timestamps`` holds milliseconds, or, with ``timestamp_pairs``, librdkafka's ``(type, milliseconds)``
    pairs as its messages give them (the milliseconds are taken where read: one pass less per fetch).
    """

    __slots__ = ("headers", "keys", "offsets", "partitions", "text_keys", "timestamp_pairs", "timestamps", "topic",
                 "topics")

    def __init__(
        self,
        topic: str | None,
        topics: Sequence[str] | None,
        partitions: Sequence[int],
        offsets: Sequence[int],
        keys: Sequence[bytes | None],
        timestamps: Sequence[Any],
        headers: Sequence[Any],
        timestamp_pairs: bool = False,
    ) -> None:
        super().__init__(range(len(partitions)))
        self.topic = topic  # every record's, or None: then each one's is in ``topics``
        self.topics = topics
        self.partitions = partitions
        self.offsets = offsets
        self.keys = keys
        self.timestamps = timestamps
        self.headers = headers
        self.timestamp_pairs = timestamp_pairs
        self.text_keys = False

    def make(self, row: int) -> dict[str, Any]:
        key = self.keys[row]
        timestamp = self.timestamps[row]
        return {"topic": self.topic if self.topics is None else self.topics[row], "partition": self.partitions[row],
                "offset": self.offsets[row], "key": _text(key) if self.text_keys else key,
                "timestamp": timestamp[1] if self.timestamp_pairs else timestamp, "headers": self.headers[row] or ()}

    def _milliseconds(self) -> Sequence[int]:
        return list(map(_MILLISECONDS, self.timestamps)) if self.timestamp_pairs else self.timestamps

    def make_all(self, rows: Sequence[int]) -> list[dict[str, Any]]:
        if type(rows) is not range or self.text_keys or self.topics is not None:
            return super().make_all(rows)
        topic = self.topic
        return [{"topic": topic, "partition": p, "offset": o, "key": k, "timestamp": t, "headers": h or ()}
                for p, o, k, t, h in zip(self.partitions, self.offsets, self.keys, self._milliseconds(), self.headers,
                                         strict=True)]

    def row_column(self, key: str) -> list[Any] | None:
        rows = self.rows
        if key == "topic":
            return [self.topic] * len(rows) if self.topics is None else [self.topics[i] for i in rows]
        column: Sequence[Any]
        if key == "key":
            column = self.keys
            if self.text_keys:
                column = list(map(_text, column))
        elif key == "headers":
            headers = self.headers
            column = [h or () for h in headers] if any(headers) else [()] * len(headers)
        elif key == "partition":
            column = self.partitions
        elif key == "offset":
            column = self.offsets
        elif key == "timestamp":
            column = self._milliseconds()
        else:
            return [None] * len(rows)  # no context of this batch has any other key (none was read yet)
        if type(rows) is range:
            return list(column)
        return [column[i] for i in rows]


def _text(key: bytes | None) -> str | None:
    """A key as text (``text_keys``): UTF-8, undecodable bytes replaced."""
    return None if key is None else key.decode("utf-8", errors="replace")
