"""Everything storage keeps for one activation: :class:`ObjectStore`.

The public ``Storage``, ``Transaction`` and ``SqlStorage`` are thin facades
over it, and the alarm scheduler uses it through named methods. It reads
through the object's cache, the storage engine's uncommitted batches and
the backend, in that order; it writes into the cache and into the engine's
batch; it holds the object's SQL database, its alarm and whether a
transaction is open.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from ._alarm_state import AlarmState
from ._backend import KeyRange
from ._cache import MISSING, ObjectCache
from ._engine import StorageEngine
from ._gate import InputGateHold
from ._overlay import merged_rows
from ._sqldb import ObjectDatabase
from ._values import ValueCodec

if TYPE_CHECKING:
    from .._core._live import LiveObject

__all__ = ["ObjectStore"]


class ObjectStore:
    """The storage state of one activation (internal; one per live object).

    Args:
        record: The activation.
        engine: The runtime's write buffer and committer.
        codec: Turns values into stored bytes and back.
        cache: This activation's cache (counted against the runtime's budget).
    """

    __slots__ = ("_db", "_engine", "_in_transaction", "alarm", "cache", "codec", "record")

    def __init__(
        self, record: LiveObject, engine: StorageEngine, codec: ValueCodec, cache: ObjectCache
    ) -> None:
        self.record = record
        self.codec = codec
        self.cache = cache
        self.alarm = AlarmState(record, engine)
        self._engine = engine
        self._db: ObjectDatabase | None = None
        self._in_transaction = False

    def __repr__(self) -> str:
        return f"<ObjectStore of {self.record.object_id!r}>"

    def hold(self) -> InputGateHold:
        """``async with store.hold():`` — hold the input gate for one storage call."""
        return InputGateHold(self.record)

    # ------------------------------------------------------------- key-value

    async def read(self, keys: list[str]) -> dict[str, bytes]:
        """The serialized values of those keys that exist (the caller holds the gate)."""
        record = self.record
        cache = self.cache
        cache.touch()
        entries = cache.entries
        result: dict[str, bytes] = {}
        missing: list[str] = []
        for key in keys:
            data = entries.get(key, MISSING)
            if data is MISSING:
                data = self._engine.pending_value(record.key, key)
                if data is MISSING:
                    if not cache.complete:
                        missing.append(key)
                    continue
                cache.remember(key, data)
            if data is not None:
                result[key] = data
        if missing:
            oid = record.object_id
            fetched = await self._engine.backend.read(oid.namespace, oid.hex, missing)
            for key in missing:
                data = fetched.get(key)
                cache.remember(key, data)
                if data is not None:
                    result[key] = data
        return result

    def write(self, changes: dict[str, bytes | None]) -> None:
        """Buffer serialized values (``None`` deletes) for the next commit."""
        cache = self.cache
        cache.touch()
        for key, data in changes.items():
            cache.remember(key, data)
        self._engine.batch_for(self.record).write.puts.update(changes)

    async def list_rows(self, key_range: KeyRange) -> list[tuple[str, bytes]]:
        """Entries in ``key_range``, uncommitted writes included, in key order."""
        oid = self.record.object_id
        backend = self._engine.backend

        async def fetch(r: KeyRange) -> list[tuple[str, bytes]]:
            return await backend.read_range(oid.namespace, oid.hex, r)

        return await merged_rows(fetch, self._engine.overlays(self.record.key), key_range)

    def delete_all(self) -> None:
        """Delete every key, the alarm and every SQL table, in the next commit."""
        write = self._engine.batch_for(self.record).write
        write.clear = True
        write.puts.clear()
        write.alarm = None  # the clear deletes it
        self.cache.clear(complete=True)
        self.alarm.cleared()
        if self.has_database():
            self.database().drop_all(self.sql_changed)

    async def wait_committed(self) -> None:
        """Wait until every write made so far is committed (the output gate)."""
        await self.record.output_gate.wait()

    # ---------------------------------------------------------- transactions

    @property
    def in_transaction(self) -> bool:
        """True inside ``async with storage.transaction()``."""
        return self._in_transaction

    async def enter_transaction(self) -> None:
        """Hold the input gate for a transaction block.

        Raises:
            RuntimeError: a transaction of this object is already open in
                this task (transactions do not nest).
        """
        record = self.record
        record.check_alive()
        gate = record.input_gate
        if self._in_transaction and gate.is_held and gate.try_hold():
            gate.release()
            raise RuntimeError("transactions do not nest; use the txn you already have")
        await trio.lowlevel.checkpoint_if_cancelled()
        await gate.acquire()
        try:
            record.check_alive()
        except BaseException:
            gate.release()
            raise
        self._in_transaction = True

    def end_transaction_sql(self, *, commit: bool) -> None:
        """Keep or undo the SQL statements of the transaction block."""
        if self._db is not None:
            self._db.end_savepoint(commit=commit, on_pending=self.sql_changed)

    def leave_transaction(self) -> None:
        """The transaction block is over: release the input gate."""
        self._in_transaction = False
        record = self.record
        try:
            record.input_gate.release()
        except RuntimeError:
            # A reset forced the gate open while we held it: nothing to release.
            if record.reset_reason is None:
                raise

    # ------------------------------------------------------------------- SQL

    def database(self) -> ObjectDatabase:
        """The object's SQL database, opened (and created) on first use.

        Raises:
            NotImplementedError: the backend has no SQL database.
            StorageError: the database cannot be opened (the message says why).
        """
        oid = self.record.object_id
        try:
            connection = self._engine.backend.sql_database(
                oid.namespace, oid.hex, self._engine.sql_guard
            )
        except NotImplementedError:
            raise NotImplementedError(
                "this storage backend has no SQL database; use the key-value API"
            ) from None
        db = self._db
        if db is None or db.connection is not connection:
            db = self._db = ObjectDatabase(connection, self._commit_sql_now)
        return db

    def has_database(self) -> bool:
        """True if the object has an SQL database (without creating one)."""
        oid = self.record.object_id
        return self._db is not None or self._engine.backend.has_sql_database(
            oid.namespace, oid.hex
        )

    def _commit_sql_now(self, db: ObjectDatabase) -> None:
        self._engine.commit_sql_now(self.record, db)

    def sql_changed(self, db: ObjectDatabase) -> None:
        """``db`` holds changes: commit them with the object's next batch."""
        self._engine.batch_for(self.record).sql = db
