"""``async with storage.transaction() as txn``: all or nothing.

The block holds the object's input gate from start to end, so no other
event of the object runs inside it, even across awaits on other I/O. The
transaction's writes stay in the transaction until the block ends without
an exception; SQL statements run inside it sit in a savepoint that ends
with the block.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

import trio

from ._backend import KeyRange
from ._kv import KeyValue
from ._overlay import PendingChanges, merged_rows

if TYPE_CHECKING:
    from ._store import ObjectStore

__all__ = ["Transaction", "TransactionContext"]


class _TransactionWrites:
    """The transaction's own writes, laid over the object's storage."""

    __slots__ = ("changes", "state", "store")

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.changes = PendingChanges()
        self.state = "open"

    def check_open(self) -> None:
        if self.state != "open":
            raise RuntimeError(f"this transaction is {self.state}; start a new one")

    async def read(self, keys: list[str]) -> dict[str, bytes]:
        self.check_open()
        puts = self.changes.puts
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
            result.update(await self.store.read(rest))
        return result

    def write(self, changes: dict[str, bytes | None]) -> None:
        self.check_open()
        self.changes.puts.update(changes)

    async def list_rows(self, key_range: KeyRange) -> list[tuple[str, bytes]]:
        self.check_open()
        return await merged_rows(self.store.list_rows, [self.changes], key_range)

    def rollback(self) -> None:
        self.check_open()
        self.state = "rolled back"
        self.changes = PendingChanges()
        self.store.end_transaction_sql(commit=False)

    def commit(self) -> None:
        self.state = "committed"
        self.store.end_transaction_sql(commit=True)
        if self.changes.puts:
            self.store.write(self.changes.puts)


class Transaction(KeyValue):
    """The ``txn`` of ``async with storage.transaction() as txn``.

    Reads see the transaction's own writes; nothing reaches the object's
    storage until the block ends without an exception.
    """

    __slots__ = ("_source", "_store", "_writes")

    def __init__(self, store: ObjectStore, writes: _TransactionWrites) -> None:
        self._store = store
        self._source = self._writes = writes

    def __repr__(self) -> str:
        return f"<Transaction of {self._store.record.object_id!r} ({self._writes.state})>"

    def rollback(self) -> None:
        """Discard every write of this transaction; the block then commits nothing."""
        self._writes.rollback()


class TransactionContext:
    """The async context manager returned by ``Storage.transaction()``."""

    __slots__ = ("_store", "_writes")

    def __init__(self, store: ObjectStore) -> None:
        self._store = store
        self._writes: _TransactionWrites | None = None

    async def __aenter__(self) -> Transaction:
        await self._store.enter_transaction()
        self._writes = _TransactionWrites(self._store)
        return Transaction(self._store, self._writes)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        writes = self._writes
        assert writes is not None
        try:
            if writes.state == "open":
                if exc_type is None:
                    writes.commit()
                else:
                    writes.rollback()
            await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            self._store.leave_transaction()
