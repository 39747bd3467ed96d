"""``get``/``put``/``delete``/``list``, as ``Storage`` and ``Transaction`` both offer them.

Every call holds the object's input gate for its whole duration, so no other
event starts while it runs, and every call is a checkpoint (the gate is
still held across it). Values cross the runtime's value codec, so ``get``
returns a fresh copy each time; ``type=`` structures it back into an attrs
class.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

from ._backend import KeyRange
from ._checks import check_entries, check_key, check_keys, check_list_args
from ._gate import InputGateHold

if TYPE_CHECKING:
    from ._store import ObjectStore

__all__ = ["KeyValue", "KeyValueSource"]

T = TypeVar("T")

_NO_VALUE: Final[Any] = object()


class KeyValueSource(Protocol):
    """Where the key-value calls read and write serialized values (the caller holds the gate)."""

    async def read(self, keys: list[str]) -> dict[str, bytes]:
        """The values of those keys that exist."""

    def write(self, changes: dict[str, bytes | None]) -> None:
        """Buffer values (``None`` deletes)."""

    async def list_rows(self, key_range: KeyRange) -> list[tuple[str, bytes]]:
        """Entries in ``key_range``, in key order."""


class KeyValue:
    """The key-value calls, over a subclass's ``_source`` (and ``_store``, for the gate)."""

    __slots__ = ()

    _store: ObjectStore
    _source: KeyValueSource

    async def get(self, keys: str | Iterable[str], type: type[T] | None = None) -> Any:
        """Read one key (its value or ``None``) or many keys (a dict of those found).

        Args:
            keys: A key, or an iterable of at most 128 keys.
            type: Structure each value into this class (an attrs class, ...).

        Returns:
            For one key, the value or ``None``; for several, a dict of the
            keys that exist, ordered by key.

        Raises:
            TypeError: a key is not a str.
            LimitExceededError: too many keys, or a key over 2,048 bytes.
            StorageError: a stored value cannot be decoded (names the key).
        """
        store = self._store
        if isinstance(keys, str):
            key = check_key(keys)
            async with InputGateHold(store.record):
                found = await self._source.read([key])
            data = found.get(key)
            return None if data is None else store.codec.loads(key, data, type)
        names = check_keys(keys)
        async with InputGateHold(store.record):
            found = await self._source.read(names)
        loads = store.codec.loads
        return {key: loads(key, found[key], type) for key in sorted(found)}

    async def put(self, key: str | Mapping[str, Any], value: Any = _NO_VALUE, /) -> None:
        """Store ``value`` under ``key``, or every entry of a mapping, atomically.

        The write is visible to reads at once; replies and messages sent
        after it wait until it is committed.

        Raises:
            TypeError: a key is not a str, the value is ``None`` or cannot
                be serialized.
            LimitExceededError: more than 128 entries, a key over 2,048
                bytes, or a value over the size limit (2 MiB by default).
        """
        if isinstance(key, str):
            if value is _NO_VALUE:
                raise TypeError("put(key, value) needs a value (or pass one mapping)")
            entries = {check_key(key): value}
        else:
            if value is not _NO_VALUE:
                raise TypeError(
                    f"put() takes a key and a value, or one mapping; got a "
                    f"{type(key).__name__} key"
                )
            entries = check_entries(key)
        store = self._store
        dumps = store.codec.dumps
        changes: dict[str, bytes | None] = {k: dumps(k, v) for k, v in entries.items()}
        async with InputGateHold(store.record):
            self._source.write(changes)

    async def delete(self, keys: str | Iterable[str]) -> Any:
        """Delete one key (returns whether it existed) or many (returns how many existed).

        Raises:
            TypeError: a key is not a str.
            LimitExceededError: too many keys, or a key over 2,048 bytes.
        """
        single = isinstance(keys, str)
        names = [check_key(keys)] if single else check_keys(keys)
        source = self._source
        async with InputGateHold(self._store.record):
            found = await source.read(names)
            source.write(dict.fromkeys(names))
        return bool(found) if single else len(found)

    async def list(
        self,
        *,
        start: str | None = None,
        start_after: str | None = None,
        end: str | None = None,
        prefix: str | None = None,
        reverse: bool = False,
        limit: int | None = None,
        type: type[T] | None = None,
    ) -> dict[str, Any]:
        """Entries ordered by the UTF-8 bytes of their keys.

        Args:
            start: First key to include (inclusive).
            start_after: Include only keys after this one (exclusive);
                not together with ``start``.
            end: Include only keys before this one (exclusive).
            prefix: Include only keys starting with this.
            reverse: Descending order (``limit`` then keeps the last keys).
            limit: At most this many entries (> 0).
            type: Structure each value into this class.

        Raises:
            TypeError: an argument has the wrong type.
            ValueError: ``start`` with ``start_after``, or ``limit <= 0``.
            StorageError: a stored value cannot be decoded (names the key).
        """
        lo, hi, rev, lim = check_list_args(start, start_after, end, prefix, reverse, limit)
        store = self._store
        async with InputGateHold(store.record):
            if lo is not None and hi is not None and lo >= hi:
                rows: list[tuple[str, bytes]] = []
            else:
                rows = await self._source.list_rows(KeyRange(lo, hi, rev, lim))
        loads = store.codec.loads
        return {key: loads(key, data, type) for key, data in rows}
