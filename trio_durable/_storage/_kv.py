"""``ctx.storage``: the asynchronous key-value API, transactions and alarms.

Every call holds the object's input gate for its whole duration, so no other
event starts while it runs, and every call is a checkpoint (the gate is
still held across it). Writes go to the object's cache and to the storage
engine's buffer at once; the reply or message that follows waits on the
output gate until they are committed.

Values cross the runtime's private cattrs converter (JSON), so ``get``
returns a fresh copy each time; ``type=`` structures it back into an attrs
class.
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import attrs
import trio

from .._core._budget import cooperative_yield
from ._backend import AlarmRecord, KeyRange
from ._checks import (
    check_entries,
    check_key,
    check_keys,
    check_list_args,
    check_value_size,
)
from ._engine import MISSING, StorageEngine
from ._sql import SqlStorage

if TYPE_CHECKING:
    from .._convert import Converter
    from .._core._live import LiveObject

__all__ = ["Storage", "Transaction"]

T = TypeVar("T")

_NO_VALUE: Any = object()
_UNKNOWN: Any = object()

#: The per-activation cache is dropped when it grows past either bound.
CACHE_MAX_ENTRIES = 10_000
CACHE_MAX_BYTES = 32 * 1024 * 1024


class _Changes(Protocol):
    clear: bool
    puts: dict[str, bytes | None]


@attrs.define(eq=False, slots=True)
class _TxnChanges:
    clear: bool = False
    puts: dict[str, bytes | None] = attrs.field(factory=dict)


def _in_range(key: str, key_range: KeyRange) -> bool:
    return (key_range.start is None or key >= key_range.start) and (
        key_range.end is None or key < key_range.end
    )


async def merged_rows(
    fetch: Callable[[KeyRange], Awaitable[list[tuple[str, bytes]]]],
    overlays: list[_Changes],
    key_range: KeyRange,
) -> list[tuple[str, bytes]]:
    """``fetch(key_range)`` with uncommitted changes (oldest first) laid over it.

    A deleted key may hide one fetched row, so the fetch asks for as many
    extra rows as there are deletions.
    """
    for index in range(len(overlays) - 1, -1, -1):
        if overlays[index].clear:
            overlays = overlays[index:]
            base: list[tuple[str, bytes]] = []
            break
    else:
        if not overlays:
            return await fetch(key_range)
        limit = key_range.limit
        if limit is not None:
            limit += sum(1 for o in overlays for v in o.puts.values() if v is None)
        base = await fetch(attrs.evolve(key_range, limit=limit))
    merged = dict(base)
    for overlay in overlays:
        for key, value in overlay.puts.items():
            if not _in_range(key, key_range):
                continue
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
    keys = sorted(merged, reverse=key_range.reverse)
    if key_range.limit is not None:
        keys = keys[: key_range.limit]
    return [(key, merged[key]) for key in keys]


class _Hold:
    """``async with``: hold the input gate, with a checkpoint (trio convention)."""

    __slots__ = ("_record", "_waited")

    def __init__(self, record: LiveObject) -> None:
        self._record = record
        self._waited = False

    async def __aenter__(self) -> None:
        record = self._record
        record.check_alive()
        await trio.lowlevel.checkpoint_if_cancelled()
        gate = record.input_gate
        if not gate.try_hold():
            await gate.acquire()
            self._waited = True
        try:
            record.check_alive()
        except BaseException:
            self._release()
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if not self._waited:
                # A schedule point on the cooperative budget, as for calls:
                # never lets another event in, since we still hold the gate.
                await cooperative_yield()
        finally:
            self._release()

    def _release(self) -> None:
        try:
            self._record.input_gate.release()
        except RuntimeError:
            # A reset forced the gate open while we held it: nothing to release.
            if self._record.reset_reason is None:
                raise


class _KeyValue:
    """``get``/``put``/``delete``/``list`` over a read/write/list implementation."""

    __slots__ = ()

    _record: LiveObject
    _engine: StorageEngine
    _converter: Converter

    async def _read(self, keys: list[str]) -> dict[str, bytes]:
        raise NotImplementedError

    def _write(self, changes: dict[str, bytes | None]) -> None:
        raise NotImplementedError

    async def _list_rows(self, key_range: KeyRange) -> list[tuple[str, bytes]]:
        raise NotImplementedError

    def _hold(self) -> _Hold:
        return _Hold(self._record)

    def _loads(self, data: bytes, type: type[T] | None) -> Any:
        return self._converter.loads(data, type)

    def _dumps(self, key: str, value: Any) -> bytes:
        kind = type(value)
        if kind is str or kind is int or kind is bool:
            data = json.dumps(value, ensure_ascii=False).encode("utf-8")  # fast path
        elif value is None:
            raise TypeError(f"cannot store None under {key!r}; use delete() to remove a key")
        else:
            data = self._converter.dumps(value)
        check_value_size(key, data, self._engine.max_value_bytes)
        return data

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
        """
        if isinstance(keys, str):
            key = check_key(keys)
            async with self._hold():
                found = await self._read([key])
            data = found.get(key)
            return None if data is None else self._loads(data, type)
        names = check_keys(keys)
        async with self._hold():
            found = await self._read(names)
        return {key: self._loads(found[key], type) for key in sorted(found)}

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
        changes: dict[str, bytes | None] = {k: self._dumps(k, v) for k, v in entries.items()}
        async with self._hold():
            self._write(changes)

    async def delete(self, keys: str | Iterable[str]) -> Any:
        """Delete one key (returns whether it existed) or many (returns how many existed).

        Raises:
            TypeError: a key is not a str.
            LimitExceededError: too many keys, or a key over 2,048 bytes.
        """
        single = isinstance(keys, str)
        names = [check_key(keys)] if single else check_keys(keys)
        async with self._hold():
            found = await self._read(names)
            self._write(dict.fromkeys(names))
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
        """
        lo, hi, rev, lim = check_list_args(start, start_after, end, prefix, reverse, limit)
        async with self._hold():
            if lo is not None and hi is not None and lo >= hi:
                rows: list[tuple[str, bytes]] = []
            else:
                rows = await self._list_rows(KeyRange(lo, hi, rev, lim))
        return {key: self._loads(data, type) for key, data in rows}


class Storage(_KeyValue):
    """An object's durable storage: ``self.ctx.storage``. Made by the runtime.

    Key-value calls and alarm calls are async; ``sql`` is synchronous.
    """

    __slots__ = (
        "_alarm",
        "_alarm_changed",
        "_cache",
        "_cache_bytes",
        "_complete",
        "_converter",
        "_engine",
        "_record",
        "_sql",
        "_txn",
    )

    def __init__(self, record: LiveObject, engine: StorageEngine, converter: Converter) -> None:
        self._record = record
        self._engine = engine
        self._converter = converter
        self._cache: dict[str, bytes | None] = {}
        self._cache_bytes = 0
        self._complete = False  # after delete_all: a key not in the cache is absent
        self._alarm: AlarmRecord | None = _UNKNOWN
        self._alarm_changed = False
        self._sql: SqlStorage | None = None
        self._txn: Transaction | None = None

    def __repr__(self) -> str:
        return f"<Storage of {self._record.object_id!r}>"

    # ---------------------------------------------------------------- plumbing

    def _remember(self, key: str, data: bytes | None) -> None:
        if self._cache_bytes > CACHE_MAX_BYTES or len(self._cache) >= CACHE_MAX_ENTRIES:
            # Uncommitted writes also live in the engine's buffer, so dropping
            # the whole cache loses nothing.
            self._cache.clear()
            self._cache_bytes = 0
            self._complete = False
        self._cache[key] = data
        if data is not None:
            self._cache_bytes += len(data)

    async def _read(self, keys: list[str]) -> dict[str, bytes]:
        record = self._record
        result: dict[str, bytes] = {}
        missing: list[str] = []
        cache = self._cache
        for key in keys:
            if key in cache:
                data = cache[key]
            else:
                data = self._engine.pending_value(record.key, key)
                if data is MISSING:
                    if not self._complete:
                        missing.append(key)
                    continue
                self._remember(key, data)
            if data is not None:
                result[key] = data
        if missing:
            oid = record.object_id
            fetched = await self._engine.backend.read(oid.namespace, oid.hex, missing)
            for key in missing:
                data = fetched.get(key)
                self._remember(key, data)
                if data is not None:
                    result[key] = data
        return result

    def _write(self, changes: dict[str, bytes | None]) -> None:
        for key, data in changes.items():
            self._remember(key, data)
        self._engine.batch_for(self._record).write.puts.update(changes)

    async def _list_rows(self, key_range: KeyRange) -> list[tuple[str, bytes]]:
        oid = self._record.object_id
        backend = self._engine.backend

        async def fetch(r: KeyRange) -> list[tuple[str, bytes]]:
            return await backend.read_range(oid.namespace, oid.hex, r)

        overlays: list[_Changes] = list(self._engine.overlays(self._record.key))
        return await merged_rows(fetch, overlays, key_range)

    # ------------------------------------------------------------ public API

    async def delete_all(self) -> None:
        """Delete every key and the alarm of this object, atomically."""
        async with self._hold():
            write = self._engine.batch_for(self._record).write
            write.clear = True
            write.puts.clear()
            write.alarm = None
            self._cache.clear()
            self._cache_bytes = 0
            self._complete = True
            self._alarm = None
            self._alarm_changed = True
            oid = self._record.object_id
            if self._sql is not None or self._engine.backend.has_sql_database(
                oid.namespace, oid.hex
            ):
                self.sql._drop_all()

    async def sync(self) -> None:
        """Wait until every write made so far is committed.

        Raises:
            ObjectResetError: the commit failed (the object was reset).
        """
        async with self._hold():
            pass
        await self._record.output_gate.wait()

    def transaction(self) -> TransactionContext:
        """``async with storage.transaction() as txn:`` — all or nothing.

        No other event runs inside the block. Leaving it normally commits
        every write made through ``txn``; an exception (which propagates
        with its own type) or ``txn.rollback()`` discards them.
        """
        return TransactionContext(self)

    @property
    def sql(self) -> SqlStorage:
        """The object's own SQLite database (synchronous API)."""
        if self._sql is None:
            self._sql = SqlStorage(self._record, self._engine, lambda: self._txn is not None)
        return self._sql

    # ---------------------------------------------------------------- alarms

    async def _load_alarm(self) -> AlarmRecord | None:
        if self._alarm is _UNKNOWN:
            alarm = self._engine.pending_alarm(self._record.key)
            if alarm is MISSING:
                oid = self._record.object_id
                alarm = await self._engine.backend.read_alarm(oid.namespace, oid.hex)
            self._alarm = alarm
        return self._alarm

    def _store_alarm(self, alarm: AlarmRecord | None) -> None:
        self._alarm = alarm
        write = self._engine.batch_for(self._record).write
        write.alarm = alarm if alarm is not None else False

    async def get_alarm(self) -> float | None:
        """When the alarm runs next (epoch seconds), or ``None``.

        Inside the ``alarm()`` handler this is ``None`` unless the handler
        set a new alarm.
        """
        async with self._hold():
            alarm = await self._load_alarm()
        return None if alarm is None else alarm.time

    async def set_alarm(self, when: float | datetime.datetime) -> None:
        """Run the object's ``alarm()`` handler at ``when`` (replaces any alarm).

        Args:
            when: Epoch seconds, or an aware ``datetime``. A time in the past
                runs as soon as possible.

        Raises:
            TypeError: the class has no ``alarm()`` handler, or ``when`` is
                not a number or an aware datetime.
            ValueError: ``when`` is not finite.
        """
        cls = self._record.object_class
        if not callable(getattr(cls, "alarm", None)):
            raise TypeError(f"{cls.__name__} has no alarm() handler, so it cannot set an alarm")
        at = _epoch_seconds(when)
        async with self._hold():
            self._store_alarm(AlarmRecord(at, at, 0))
            self._alarm_changed = True

    async def delete_alarm(self) -> None:
        """Cancel the pending alarm, if any (a running handler is not cancelled)."""
        async with self._hold():
            self._store_alarm(None)
            self._alarm_changed = True


def _epoch_seconds(when: object) -> float:
    if isinstance(when, datetime.datetime):
        if when.tzinfo is None or when.utcoffset() is None:
            raise TypeError("set_alarm() needs an aware datetime (with a tzinfo), got a naive one")
        return when.timestamp()
    if isinstance(when, bool) or not isinstance(when, int | float):
        raise TypeError(
            f"set_alarm() takes epoch seconds or an aware datetime, got {type(when).__name__}"
        )
    if not math.isfinite(when):
        raise ValueError(f"set_alarm() needs a finite time, got {when!r}")
    return float(when)


class Transaction(_KeyValue):
    """The ``txn`` of ``async with storage.transaction() as txn``.

    Reads see the transaction's own writes; nothing reaches the object's
    storage until the block ends without an exception.
    """

    __slots__ = ("_changes", "_converter", "_engine", "_record", "_state", "_storage")

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._record = storage._record
        self._engine = storage._engine
        self._converter = storage._converter
        self._changes = _TxnChanges()
        self._state = "open"

    def _check_open(self) -> None:
        if self._state != "open":
            raise RuntimeError(f"this transaction is {self._state}; start a new one")

    def rollback(self) -> None:
        """Discard every write of this transaction; the block then commits nothing."""
        self._check_open()
        self._state = "rolled back"
        self._changes = _TxnChanges()
        sql = self._storage._sql
        if sql is not None:
            sql._end_savepoint(commit=False)

    async def _read(self, keys: list[str]) -> dict[str, bytes]:
        self._check_open()
        puts = self._changes.puts
        result: dict[str, bytes] = {}
        rest = []
        for key in keys:
            if key in puts:
                data = puts[key]
                if data is not None:
                    result[key] = data
            else:
                rest.append(key)
        if rest:
            result.update(await self._storage._read(rest))
        return result

    def _write(self, changes: dict[str, bytes | None]) -> None:
        self._check_open()
        self._changes.puts.update(changes)

    async def _list_rows(self, key_range: KeyRange) -> list[tuple[str, bytes]]:
        self._check_open()
        return await merged_rows(self._storage._list_rows, [self._changes], key_range)


class TransactionContext:
    """The async context manager returned by :meth:`Storage.transaction`."""

    __slots__ = ("_storage", "_txn")

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._txn: Transaction | None = None

    async def __aenter__(self) -> Transaction:
        storage = self._storage
        record = storage._record
        record.check_alive()
        gate = record.input_gate
        if storage._txn is not None and gate.is_held and gate.try_hold():
            gate.release()
            raise RuntimeError("transactions do not nest; use the txn you already have")
        await trio.lowlevel.checkpoint_if_cancelled()
        await gate.acquire()
        try:
            record.check_alive()
        except BaseException:
            gate.release()
            raise
        self._txn = Transaction(storage)
        storage._txn = self._txn
        return self._txn

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        txn = self._txn
        storage = self._storage
        assert txn is not None
        try:
            if txn._state == "open":
                if exc_type is None:
                    txn._state = "committed"
                    sql = storage._sql
                    if sql is not None:
                        sql._end_savepoint(commit=True)
                    if txn._changes.puts:
                        storage._write(txn._changes.puts)
                else:
                    txn.rollback()
            await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            storage._txn = None
            try:
                storage._record.input_gate.release()
            except RuntimeError:
                if storage._record.reset_reason is None:
                    raise
