"""The key-value cache of live objects, bounded by one byte budget per runtime.

Each activation keeps the values it has read or written in an
:class:`ObjectCache`, so a second read of a key costs a dict lookup. All
caches of a runtime share one :class:`CacheBudget`: when their total size
passes it, the caches of the objects used least recently are emptied until
the total is back under three quarters of the budget. An object that stays
awake therefore cannot grow memory without bound, and a quiet object's
cache goes before a busy one's.

Emptying a cache loses nothing: committed values are in the backend and
uncommitted ones in the storage engine's batches, where reads find them.
"""

from __future__ import annotations

import itertools
from typing import Any, Final

__all__ = ["ENTRY_OVERHEAD", "MISSING", "CacheBudget", "ObjectCache", "key_bytes"]

#: Marker for "the cache knows nothing about this key".
MISSING: Final[Any] = object()

_UNLIMITED: Final = 2**62

#: Bytes an entry costs beyond its key and value: the dict slot, the bytes
#: and str headers (measured on CPython 3.11, rounded up).
ENTRY_OVERHEAD: Final = 128


def key_bytes(key: str) -> int:
    """What ``key`` costs the budget: its UTF-8 length (a key of 2,048 "é" is 4 KiB)."""
    # str.isascii() is O(1) on CPython; only other keys pay for an encoding.
    return len(key) if key.isascii() else len(key.encode("utf-8", "surrogatepass"))


class CacheBudget:
    """The byte budget shared by every object's cache in one runtime.

    Args:
        max_bytes: The most the caches may hold together (approximate bytes:
            keys in UTF-8, values serialized, and a fixed overhead per entry).
    """

    __slots__ = ("_caches", "clock", "evictions", "max_bytes", "used")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        #: Caches emptied to stay within the budget (for tests and statistics).
        self.evictions = 0
        #: Counts uses of any cache: ``next(clock)`` orders caches by last use.
        self.clock = itertools.count(1)
        self._caches: set[ObjectCache] = set()

    def __repr__(self) -> str:
        return f"<CacheBudget {self.used:,}/{self.max_bytes:,} bytes, {len(self._caches)} caches>"

    def new_cache(self) -> ObjectCache:
        """A cache for one activation, counted against this budget."""
        cache = ObjectCache(self)
        self._caches.add(cache)
        return cache

    def forget(self, cache: ObjectCache) -> None:
        """Stop counting ``cache`` (its activation ended)."""
        self._caches.discard(cache)
        cache.detach()

    def enforce(self) -> None:
        """Empty the least recently used caches until the total is under 3/4 of the budget.

        Sorting every cache costs O(n log n), paid once per quarter of the
        budget written, not per write.
        """
        target = self.max_bytes * 3 // 4
        for cache in sorted(self._caches, key=_last_used):
            if self.used <= target:
                break
            if cache.size:
                cache.clear()
                self.evictions += 1


def _last_used(cache: ObjectCache) -> int:
    return cache.last_used


class ObjectCache:
    """Serialized values one activation has seen: key → bytes, or ``None`` (absent).

    Made by :meth:`CacheBudget.new_cache`. ``complete`` is true after
    ``delete_all``: a key that is not in the cache then does not exist.
    """

    __slots__ = ("_budget", "_clock", "complete", "entries", "last_used", "size")

    def __init__(self, budget: CacheBudget) -> None:
        self._budget = budget
        self._clock = budget.clock
        #: Key → cached value; read it directly, change it only through the methods.
        self.entries: dict[str, bytes | None] = {}
        self.size = 0
        self.complete = False
        self.last_used = 0

    def __repr__(self) -> str:
        return f"<ObjectCache {len(self.entries)} entries, {self.size:,} bytes>"

    def touch(self) -> None:
        """Mark the cache as just used (called once per storage operation)."""
        self.last_used = next(self._clock)

    def remember(self, key: str, data: bytes | None) -> None:
        """Cache ``data`` as the value of ``key`` (``None``: the key is absent)."""
        entries = self.entries
        old = entries.get(key, MISSING)
        if old is MISSING:
            delta = ENTRY_OVERHEAD + key_bytes(key) + (0 if data is None else len(data))
        else:
            delta = (0 if data is None else len(data)) - (0 if old is None else len(old))
        entries[key] = data
        if delta:
            self.size += delta
            budget = self._budget
            budget.used += delta
            if budget.used > budget.max_bytes:
                budget.enforce()

    def detach(self) -> None:
        """Empty the cache and count it against a budget of its own from now on.

        A call still running when its activation ended (a reset during a
        backend read) may yet remember a value; it no longer counts.
        """
        self.clear()
        self._budget = CacheBudget(_UNLIMITED)

    def clear(self, *, complete: bool = False) -> None:
        """Forget every entry; ``complete=True`` records that the object is now empty."""
        self.entries.clear()
        self._budget.used -= self.size
        self.size = 0
        self.complete = complete
