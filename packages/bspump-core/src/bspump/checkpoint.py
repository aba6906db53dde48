"""Checkpoint stores: where sources keep positions that their external system cannot keep for them.

A position the external system keeps itself stays there (Kafka committed offsets, a PostgreSQL replication
slot, an MQTT persistent session). Others (an offset in a file, the last row of a polled table, a scroll
cursor) go to the application's checkpoint store: by default a :class:`FileCheckpointStore` in the
``state_dir`` of ``[general]``. A connector may provide a store in its own system (a table, a collection) by
subclassing :class:`CheckpointStore`; a source picks its store in ``PositionedSource.checkpoint_store``.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from .errors import BSPumpError


class CheckpointError(BSPumpError):
    """A checkpoint could not be read or written; names the store's file or location."""


class CheckpointStore(abc.ABC):
    """Positions by source, each under a key (``PipelineID.ComponentID`` by default).

    The framework calls :meth:`load` once when a source starts, and :meth:`save` each time that source's
    acknowledged positions advanced (every ``commit_interval``, at stop), one call at a time per key.
    ``save`` must be atomic: after a crash, ``load`` returns the previous or the new positions, never a mix.
    """

    @abc.abstractmethod
    async def load(self, key: str) -> dict[str, Any]:
        """The positions last saved under ``key`` (partition -> position), or an empty dict."""

    @abc.abstractmethod
    async def save(self, key: str, positions: Mapping[str, Any]) -> None:
        """Replace what is stored under ``key`` with ``positions`` (JSON-compatible values), durably."""


class FileCheckpointStore(CheckpointStore):
    """One JSON file per key in ``directory`` (created on the first save).

    Saving writes a temporary file, ``fsync``s it, renames it over the previous checkpoint and ``fsync``s the
    directory, so that a crash or power loss leaves the old or the new checkpoint, never a torn one. File
    I/O runs in a worker thread.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._locks: dict[str, asyncio.Lock] = {}

    def path_of(self, key: str) -> Path:
        """The file of ``key``: its readable part plus a short hash, so that distinct keys never collide."""
        readable = re.sub(r"[^A-Za-z0-9._-]+", "_", key)[:80].strip(".") or "checkpoint"
        digest = hashlib.sha256(key.encode()).hexdigest()[:8]
        return self.directory / f"{readable}-{digest}.json"

    async def load(self, key: str) -> dict[str, Any]:
        return await asyncio.to_thread(self._read, self.path_of(key))

    async def save(self, key: str, positions: Mapping[str, Any]) -> None:
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            await asyncio.to_thread(self._write, self.path_of(key), dict(positions))

    @staticmethod
    def _read(path: Path) -> dict[str, Any]:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror}") from None
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise CheckpointError(f"checkpoint {path} is not valid JSON; remove it to start from the "
                                  "beginning") from None
        if not isinstance(data, dict):
            raise CheckpointError(f"checkpoint {path} does not hold an object; remove it to start from the "
                                  "beginning")
        return data

    def _write(self, path: Path, positions: dict[str, Any]) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with open(temporary, "wb") as handle:
                handle.write(orjson.dumps(positions))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
            directory = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError as exc:
            raise CheckpointError(f"cannot write checkpoint {path}: {exc.strerror}") from exc
