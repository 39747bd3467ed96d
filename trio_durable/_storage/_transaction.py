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


class Transaction(KeyValue):
    """The ``txn`` of ``async with storage.transaction() as txn``.

    Reads see the transaction's own writes; nothing reaches the object's
    storage until the block ends without an exception.
    """

    __slots__ = ("_changes", "_state", "_store")

    def __init__(self, store: ObjectStore) -> None:
        self._store = store
        self._changes = PendingChanges()
        self._state = "open"

    def __repr__(self) -> str:
        return f"<Transaction of {self._store.record.object_id!r} ({self._state})>"

    def _check_open(self) -> None:
        if self._state != "open":
            raise RuntimeError(f"this transaction is {self._state}; start a new one")

    def rollback(self) -> None:
        """Discard every write of this transaction; the block then commits nothing."""
        self._check_open()
        self._state = "rolled back"
        self._changes = PendingChanges()
        self._store.end_transaction_sql(commit=False)

    def _commit(self) -> None:
        """The block ended normally: hand the writes to the object's storage."""
        self._state = "committed"
        self._store.end_transaction_sql(commit=True)
        if self._changes.puts:
            self._store.write(self._changes.puts)

    @property
    def is_open(self) -> bool:
        """True until the transaction is committed or rolled back."""
        return self._state == "open"

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
            result.update(await self._store.read(rest))
        return result

    def _write(self, changes: dict[str, bytes | None]) -> None:
        self._check_open()
        self._changes.puts.update(changes)

    async def _list_rows(self, key_range: KeyRange) -> list[tuple[str, bytes]]:
        self._check_open()
        return await merged_rows(self._store.list_rows, [self._changes], key_range)


class TransactionContext:
    """The async context manager returned by ``Storage.transaction()``."""

    __slots__ = ("_store", "_txn")

    def __init__(self, store: ObjectStore) -> None:
        self._store = store
        self._txn: Transaction | None = None

    async def __aenter__(self) -> Transaction:
        await self._store.enter_transaction()
        self._txn = Transaction(self._store)
        return self._txn

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        txn = self._txn
        assert txn is not None
        try:
            if txn.is_open:
                if exc_type is None:
                    txn._commit()
                else:
                    txn.rollback()
            await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            self._store.leave_transaction()
