"""Lookups: reference data loaded asynchronously, read synchronously like a dict."""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from .component import build_config
from .config import Seconds

if TYPE_CHECKING:
    from .application import BSPumpApplication

log = logging.getLogger("bspump.lookup")


class Lookup(Mapping[Any, Any]):
    """Reference data for processors (geo-IP tables, user directories, code lists).

    Call order: :meth:`preflight` (by ``bspump check`` and before the application starts), then
    :meth:`load` once before any pipeline starts (a failure stops the start-up naming ``[lookup:ID]``),
    then every ``refresh`` seconds if configured (a failed refresh keeps the previous data and is
    logged). Processors read it with ``lookup[key]``, ``lookup.get(key)`` and ``key in lookup``.
    Configuration comes from ``[lookup:ID]``.
    """

    _bspump_base: ClassVar[bool] = True
    ConfigDefaults: ClassVar[dict[str, Any]] = {"refresh": Seconds(0.0, min=0.0)}
    ConfigRequired: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        app: BSPumpApplication,
        lookup_id: str | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.app = app
        self.id = lookup_id or type(self).__name__
        self.Config = build_config(type(self), app, f"lookup:{self.id}", config)
        self.data: Mapping[Any, Any] = {}
        self.loaded_at: float | None = None
        self._refresher: asyncio.Task[None] | None = None

    @abc.abstractmethod
    async def load(self) -> Mapping[Any, Any]:
        """Fetch the data and return it as a mapping; called at start and at every refresh."""

    def preflight(self) -> None:
        """Verify what can be known without connecting: files exist, ports are valid and free.

        Called by ``bspump check`` and by the application before it starts anything (no connection is
        open, no lookup loaded, no pipeline started yet). Raise :class:`~bspump.config.ConfigError` via
        ``self.Config.error(key, message)`` so that the error names ``file:line [section] key``; the
        default checks nothing. Keep it quick and synchronous: it runs once, before the pipelines.
        """

    async def start(self) -> None:
        """Load the first time and start refreshing if ``refresh`` is set."""
        await self.reload()
        interval = self.Config.getseconds("refresh")
        if interval > 0 and self._refresher is None:
            self._refresher = asyncio.create_task(self._refresh(interval), name=f"lookup:{self.id}")

    async def reload(self) -> None:
        """Load now and swap the data in at once (readers never see a half-loaded table)."""
        self.data = await self.load()
        self.loaded_at = time.time()
        log.info("lookup %r: loaded %d entries", self.id, len(self.data))

    async def _refresh(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reload()
            except Exception as exc:
                log.error("lookup %r: refresh failed, keeping the previous data: %s", self.id, exc)

    async def stop(self) -> None:
        """Stop refreshing."""
        task, self._refresher = self._refresher, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    @property
    def loaded(self) -> bool:
        """True once the first load succeeded."""
        return self.loaded_at is not None

    def __getitem__(self, key: Any) -> Any:
        return self.data[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __contains__(self, key: object) -> bool:
        return key in self.data

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id!r} {len(self.data)} entries>"
