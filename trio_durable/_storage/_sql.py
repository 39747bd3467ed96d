"""``ctx.storage.sql``: the object's own SQLite database, synchronous.

Each object that uses SQL gets its own database (created on first use).
Statements run at once in the event loop thread; their writes join an
implicit transaction that the storage engine commits together with the
object's other writes, so the output gate covers SQL too. Inside
``storage.transaction()`` SQL writes sit in a savepoint that a rollback
undoes.

What user SQL may do is an allow-list enforced by SQLite's authorizer (see
``_guard.py`` and ``docs/storage.md``): no transaction control, no ATTACH,
only read-only pragmas, only SQLite's built-in functions and FTS5, and no
table, index, view or trigger whose name starts with ``_td_``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .._exceptions import SqlError

if TYPE_CHECKING:
    from ._store import ObjectStore

__all__ = ["SqlCursor", "SqlError", "SqlStorage"]

_BINDABLE = (int, float, str, bytes, bytearray, memoryview, type(None))


class SqlCursor:
    """The result of :meth:`SqlStorage.exec`: rows as dicts, or as tuples with :meth:`raw`.

    Attributes:
        column_names: Names of the result columns (empty for statements
            without a result).
        rows_read: Rows the statement returned or changed (an estimate:
            SQLite does not report rows scanned).
        rows_written: Rows inserted, updated or deleted.
    """

    __slots__ = ("_rows", "column_names", "rows_read", "rows_written")

    def __init__(
        self, rows: list[tuple[Any, ...]], column_names: list[str], rows_written: int
    ) -> None:
        self._rows = rows
        self.column_names = column_names
        self.rows_written = rows_written
        self.rows_read = len(rows) + rows_written

    def __repr__(self) -> str:
        return f"<SqlCursor {len(self._rows)} row(s) columns={self.column_names}>"

    def __iter__(self) -> Iterator[dict[str, Any]]:
        names = self.column_names
        for row in self._rows:
            yield dict(zip(names, row, strict=True))

    def raw(self) -> Iterator[tuple[Any, ...]]:
        """The rows as tuples, in column order."""
        return iter(self._rows)

    def to_list(self) -> list[dict[str, Any]]:
        """Every row as a dict."""
        return list(self)

    def one(self) -> dict[str, Any]:
        """The only row.

        Raises:
            ValueError: the statement returned no row or more than one.
        """
        if len(self._rows) != 1:
            raise ValueError(f"expected exactly one row, got {len(self._rows)}")
        return dict(zip(self.column_names, self._rows[0], strict=True))


class SqlStorage:
    """``ctx.storage.sql``: synchronous SQL on the object's own SQLite database."""

    __slots__ = ("_store",)

    def __init__(self, store: ObjectStore) -> None:
        self._store = store

    def __repr__(self) -> str:
        return f"<SqlStorage of {self._store.record.object_id!r}>"

    def exec(self, query: str, *bindings: Any) -> SqlCursor:
        """Run one SQL statement and return its rows.

        Writes are visible at once and committed with the object's next
        commit (replies wait for it, as for key-value writes).

        Raises:
            TypeError: the query is not a str or a binding has an unsupported type.
            SqlError: the statement is not allowed: it manages transactions,
                attaches a database, runs a pragma or function outside the
                allow-list, or names a ``_td_`` table.
            StorageError: the object's database cannot be opened (the message
                names the cause).
            sqlite3.Error: SQLite rejected the statement (syntax, constraint, ...).
        """
        if not isinstance(query, str):
            raise TypeError(f"sql.exec() takes the query as a str, got {type(query).__name__}")
        for index, value in enumerate(bindings):
            if not isinstance(value, _BINDABLE):
                raise TypeError(
                    f"binding {index + 1} has type {type(value).__name__}; SQL values are "
                    "int, float, str, bytes or None"
                )
        store = self._store
        store.record.check_alive()
        rows, names, written = store.database().execute(
            query, bindings, store.in_transaction, store.sql_changed
        )
        return SqlCursor(rows, names, written)

    @property
    def database_size(self) -> int:
        """The size of the object's database in bytes."""
        return self._store.database().size()
