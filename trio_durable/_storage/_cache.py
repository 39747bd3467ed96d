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

from typing import Any, Final

__all__ = ["ENTRY_OVERHEAD", "MISSING", "CacheBudget", "ObjectCache"]

#: Marker for "the cache knows nothing about this key".
MISSING: Final[Any] = object()

#: Bytes an entry costs beyond its key and value: the dict slot, the bytes
#: and str headers (measured on CPython 3.11, rounded up).
ENTRY_OVERHEAD: Final = 128


def _entry_size(key: str, data: bytes | None) -> int:
    return ENTRY_OVERHEAD + len(key) + (0 if data is None else len(data))


class CacheBudget:
    """The byte budget shared by every object's cache in one runtime.

    Args:
        max_bytes: The most the caches may hold together (approximate bytes:
            keys, values and a fixed overhead per entry).
    """

    __slots__ = ("_caches", "_clock", "evictions", "max_bytes", "used")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        #: Caches emptied to stay within the budget (for tests and statistics).
        self.evictions = 0
        self._clock = 0
        self._caches: set[ObjectCache] = set()

    def __repr__(self) -> str:
        return f"<CacheBudget {self.used:,}/{self.max_bytes:,} bytes, {len(self._caches)} caches>"

    def new_cache(self) -> ObjectCache:
        """A cache for one activation, counted against this budget."""
        cache = ObjectCache(self)
        self._caches.add(cache)
        return cache

    def tick(self) -> int:
        """A number that grows with every use of any cache (for LRU order)."""
        self._clock += 1
        return self._clock

    def forget(self, cache: ObjectCache) -> None:
        """Stop counting ``cache`` (its activation ended)."""
        cache.clear()
        self._caches.discard(cache)

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

    __slots__ = ("_budget", "_entries", "complete", "last_used", "size")

    def __init__(self, budget: CacheBudget) -> None:
        self._budget = budget
        self._entries: dict[str, bytes | None] = {}
        self.size = 0
        self.complete = False
        self.last_used = 0

    def __repr__(self) -> str:
        return f"<ObjectCache {len(self._entries)} entries, {self.size:,} bytes>"

    def __len__(self) -> int:
        return len(self._entries)

    def touch(self) -> None:
        """Mark the cache as just used (called once per storage operation)."""
        self.last_used = self._budget.tick()

    def lookup(self, key: str) -> bytes | None:
        """The cached value (``None``: known absent), or :data:`MISSING`."""
        return self._entries.get(key, MISSING)

    def remember(self, key: str, data: bytes | None) -> None:
        """Cache ``data`` as the value of ``key`` (``None``: the key is absent)."""
        entries = self._entries
        old = entries.get(key, MISSING)
        delta = _entry_size(key, data)
        if old is not MISSING:
            delta -= _entry_size(key, old)
        entries[key] = data
        self.size += delta
        budget = self._budget
        budget.used += delta
        if budget.used > budget.max_bytes:
            budget.enforce()

    def clear(self, *, complete: bool = False) -> None:
        """Forget every entry; ``complete=True`` records that the object is now empty."""
        self._entries.clear()
        self._budget.used -= self.size
        self.size = 0
        self.complete = complete
