"""``ctx.storage``: the object's durable storage, as user code sees it.

:class:`Storage` is a facade over the activation's
:class:`~._store.ObjectStore`: the key-value calls (async), transactions,
the alarm calls (async) and the SQL database (``sql``, synchronous).
"""

from __future__ import annotations

import datetime
import math

from ._backend import AlarmRecord
from ._kv import KeyValue
from ._sql import SqlStorage
from ._store import ObjectStore
from ._transaction import TransactionContext

__all__ = ["Storage"]


class Storage(KeyValue):
    """An object's durable storage: ``self.ctx.storage``. Made by the runtime.

    Key-value calls and alarm calls are async; ``sql`` is synchronous.
    """

    __slots__ = ("_source", "_sql", "_store")

    def __init__(self, store: ObjectStore) -> None:
        self._store = store
        self._source = store
        self._sql: SqlStorage | None = None

    def __repr__(self) -> str:
        return f"<Storage of {self._store.record.object_id!r}>"

    async def delete_all(self) -> None:
        """Delete every key, the alarm and every SQL table of this object, atomically."""
        async with self._store.hold():
            self._store.delete_all()

    async def sync(self) -> None:
        """Wait until every write made so far is committed.

        Raises:
            ObjectResetError: the commit failed (the object was reset).
        """
        store = self._store
        async with store.hold():
            pass
        await store.wait_committed()

    def transaction(self) -> TransactionContext:
        """``async with storage.transaction() as txn:`` — all or nothing.

        No other event runs inside the block. Leaving it normally commits
        every write made through ``txn``; an exception (which propagates
        with its own type) or ``txn.rollback()`` discards them.
        """
        return TransactionContext(self._store)

    @property
    def sql(self) -> SqlStorage:
        """The object's own SQLite database (synchronous API)."""
        sql = self._sql
        if sql is None:
            sql = self._sql = SqlStorage(self._store)
        return sql

    # ---------------------------------------------------------------- alarms

    async def get_alarm(self) -> float | None:
        """When the alarm runs next (epoch seconds), or ``None``.

        Inside the ``alarm()`` handler this is ``None`` unless the handler
        set a new alarm.
        """
        store = self._store
        async with store.hold():
            alarm = await store.alarm.current()
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
        store = self._store
        cls = store.record.object_class
        if not callable(getattr(cls, "alarm", None)):
            raise TypeError(f"{cls.__name__} has no alarm() handler, so it cannot set an alarm")
        at = _epoch_seconds(when)
        async with store.hold():
            store.alarm.schedule(AlarmRecord(at, at, 0))

    async def delete_alarm(self) -> None:
        """Cancel the pending alarm, if any (a running handler is not cancelled)."""
        store = self._store
        async with store.hold():
            store.alarm.schedule(None)


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
