"""A lookup that is either loaded whole or queried key by key on demand, with a TTL cache.

Connectors (PostgreSQL, MongoDB, Elasticsearch...) subclass :class:`CachedLookup` and implement the
query of each mode; processors read it like any :class:`~bspump.Lookup`. In ``on_demand`` mode a
processor fetches the keys of a batch in its :meth:`~bspump.Processor.prepare` hook (one query per
batch, not per event) and then reads them synchronously in ``process``.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

from .config import Choice, Int, Seconds
from .lookup import Lookup

log = logging.getLogger("bspump.lookup")

WHOLE = "whole"
ON_DEMAND = "on_demand"

#: Stored for a key the last query did not find, so that a missing key is not queried for every event.
_ABSENT = object()


class CachedLookup(Lookup):
    """Reference data read like a dict, from a table too large or too live to load whole.

    Configuration (``[lookup:ID]``):

    - ``mode``: ``whole`` loads every entry at start (and every ``refresh``) through :meth:`load`;
      ``on_demand`` queries missing keys through :meth:`fetch` and keeps them for ``ttl``.
    - ``ttl``: how long an on-demand entry (or the knowledge that a key does not exist) stays valid;
      0 keeps entries until they are evicted.
    - ``max_entries``: the on-demand cache's size; the least recently used entries go first.
    - ``fetch_batch``: at most this many keys per :meth:`fetch` call.

    A subclass implements :meth:`load`, :meth:`fetch` or both; :meth:`preflight` refuses a mode the
    subclass does not implement. Reading: ``lookup[key]``, ``lookup.get(key)`` and ``key in lookup`` are
    synchronous and see only what is loaded or cached; ``await lookup.prefetch(keys)`` and
    ``await lookup.aget(key)`` query what is missing.
    """

    ConfigDefaults: ClassVar[dict[str, Any]] = {
        "mode": Choice(WHOLE, (WHOLE, ON_DEMAND), aliases={"on-demand": ON_DEMAND, "ondemand": ON_DEMAND}),
        "ttl": Seconds(300.0),
        "max_entries": Int(100_000, min=1),
        "fetch_batch": Int(1_000, min=1, max=100_000),
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mode = self.Config.getchoice("mode")
        self.ttl = self.Config.getseconds("ttl")
        self.max_entries = self.Config.getint("max_entries")
        self.fetch_batch = self.Config.getint("fetch_batch")
        # key -> (value or _ABSENT, expiry on the monotonic clock, or None for no expiry)
        self._cache: OrderedDict[Any, tuple[Any, float | None]] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.queries = 0

    async def load(self) -> Mapping[Any, Any]:
        """Return every entry (``mode = whole``); called at start and at every ``refresh``."""
        raise NotImplementedError(f"{type(self).__name__} cannot be loaded whole (use mode = on_demand)")

    async def fetch(self, keys: Sequence[Any]) -> Mapping[Any, Any]:
        """Return the entries found for ``keys`` (``mode = on_demand``); keys left out do not exist.

        Called by :meth:`prefetch` with at most ``fetch_batch`` distinct keys that are not cached.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot be queried on demand (use mode = whole)")

    def preflight(self) -> None:
        """Refuse a ``mode`` the subclass does not implement, naming ``[lookup:ID] mode``."""
        super().preflight()
        implemented = {WHOLE: type(self).load is not CachedLookup.load,
                       ON_DEMAND: type(self).fetch is not CachedLookup.fetch}
        if not implemented[self.mode]:
            offered = [mode for mode, ok in implemented.items() if ok]
            raise self.Config.error("mode", f"{type(self).__name__} does not support {self.mode!r}"
                                            f" (it supports: {', '.join(offered) or 'nothing'})")

    async def start(self) -> None:
        """Load the first time (``whole``), or start with an empty cache (``on_demand``)."""
        if self.mode == WHOLE:
            await super().start()
            return
        self.loaded_at = time.time()
        log.info("lookup %r: on demand, ttl %ss, at most %d entries", self.id, self.ttl, self.max_entries)

    # -- on demand -------------------------------------------------------------------------------------
    async def prefetch(self, keys: Iterable[Any]) -> None:
        """Query the keys that are not cached (or expired), ``fetch_batch`` at a time.

        ``whole`` mode has everything loaded already: nothing is queried. A failed query raises and
        leaves the cache as it was.
        """
        if self.mode == WHOLE:
            return
        now = time.monotonic()
        missing: list[Any] = []
        seen: set[Any] = set()
        for key in keys:
            if key in seen:
                continue
            seen.add(key)
            entry = self._cache.get(key)
            if entry is None or (entry[1] is not None and entry[1] <= now):
                missing.append(key)
        for start in range(0, len(missing), self.fetch_batch):
            chunk = missing[start:start + self.fetch_batch]
            self.queries += 1
            found = await self.fetch(chunk)
            expiry = time.monotonic() + self.ttl if self.ttl > 0 else None
            for key in chunk:
                self._store(key, found.get(key, _ABSENT), expiry)

    async def aget(self, key: Any, default: Any = None) -> Any:
        """The entry of ``key``, queried first when it is not cached; ``default`` if it does not exist."""
        await self.prefetch((key,))
        return self.get(key, default)

    def invalidate(self, key: Any = None) -> None:
        """Forget ``key`` (or every cached entry) so that the next prefetch queries it again."""
        if key is None:
            self._cache.clear()
        else:
            self._cache.pop(key, None)

    def _store(self, key: Any, value: Any, expiry: float | None) -> None:
        cache = self._cache
        cache[key] = (value, expiry)
        cache.move_to_end(key)
        while len(cache) > self.max_entries:
            cache.popitem(last=False)

    def _cached(self, key: Any) -> Any:
        entry = self._cache.get(key)
        if entry is None or (entry[1] is not None and entry[1] <= time.monotonic()):
            self.misses += 1
            return _ABSENT
        self._cache.move_to_end(key)
        self.hits += 1
        return entry[0]

    # -- reading ---------------------------------------------------------------------------------------
    def __getitem__(self, key: Any) -> Any:
        if self.mode == WHOLE:
            return self.data[key]
        value = self._cached(key)
        if value is _ABSENT:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        if self.mode == WHOLE:
            return key in self.data
        return self._cached(key) is not _ABSENT

    def __iter__(self) -> Iterator[Any]:
        if self.mode == WHOLE:
            return iter(self.data)
        now = time.monotonic()
        return iter([key for key, (value, expiry) in self._cache.items()
                     if value is not _ABSENT and (expiry is None or expiry > now)])

    def __len__(self) -> int:
        if self.mode == WHOLE:
            return len(self.data)
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        if self.mode == WHOLE:
            return super().__repr__()
        return f"<{type(self).__name__} {self.id!r} on demand, {len(self._cache)} cached>"
