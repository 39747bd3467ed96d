"""``ctx.storage.sql``: the object's own SQLite database, synchronous.

Each object that uses SQL gets its own database (created on first use).
Statements run at once in the event loop thread; their writes join an
implicit transaction that the storage engine commits together with the
object's other writes, so the output gate covers SQL too. Inside
``storage.transaction()`` SQL writes sit in a savepoint that a rollback
undoes.

User SQL may not manage transactions (``BEGIN``, ``COMMIT``, ``ROLLBACK``,
``SAVEPOINT``, ``RELEASE``), attach databases, change settings through
``PRAGMA`` (a few read-only pragmas are allowed), or touch tables whose
names start with ``_td_``. SQLite's authorizer enforces this, so no parsing
of user SQL is involved.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .._exceptions import SqlError

if TYPE_CHECKING:
    from .._core._live import LiveObject
    from ._engine import StorageEngine

__all__ = ["SqlCursor", "SqlError", "SqlStorage"]

_PREFIX = "_td_"

# sqlite3 caches prepared statements by their text, with the authorizer's
# verdict baked in: our own statements carry a secret comment so that user
# text can never reuse one of them.
_TAG = f"/* td-{secrets.token_hex(8)} */"
_BEGIN = f"BEGIN {_TAG}"
_COMMIT = f"COMMIT {_TAG}"
_SAVEPOINT = f"SAVEPOINT _td_txn {_TAG}"
_ROLLBACK_TO = f"ROLLBACK TO _td_txn {_TAG}"
_RELEASE = f"RELEASE _td_txn {_TAG}"

#: Pragmas a user may run: they only read.
_ALLOWED_PRAGMAS = frozenset(
    {
        "table_info",
        "table_xinfo",
        "table_list",
        "index_list",
        "index_info",
        "index_xinfo",
        "foreign_key_list",
        "foreign_key_check",
        "integrity_check",
        "quick_check",
        "page_count",
        "page_size",
        "freelist_count",
        "function_list",
        "collation_list",
    }
)

_WRITE_ACTIONS = frozenset(
    getattr(sqlite3, name)
    for name in dir(sqlite3)
    if name.startswith(("SQLITE_CREATE_", "SQLITE_DROP_"))
) | {
    sqlite3.SQLITE_INSERT,
    sqlite3.SQLITE_UPDATE,
    sqlite3.SQLITE_DELETE,
    sqlite3.SQLITE_ALTER_TABLE,
    sqlite3.SQLITE_REINDEX,
    sqlite3.SQLITE_ANALYZE,
}

_USE_TRANSACTION = (
    "manage transactions with `async with ctx.storage.transaction()`; "
    "statements without an await between them already commit together"
)


class _Guard:
    """The authorizer of one SQL database; only checks while user SQL runs."""

    __slots__ = ("checking", "reason", "wrote")

    def __init__(self) -> None:
        self.checking = False
        self.wrote = False
        self.reason: str | None = None

    def authorize(
        self, action: int, arg1: str | None, arg2: str | None, _db: str | None, _src: str | None
    ) -> int:
        if not self.checking:
            return sqlite3.SQLITE_OK
        reason = self._refusal(action, arg1, arg2)
        if reason is not None:
            self.reason = reason
            return sqlite3.SQLITE_DENY
        if action in _WRITE_ACTIONS:
            self.wrote = True
        return sqlite3.SQLITE_OK

    @staticmethod
    def _refusal(action: int, arg1: str | None, arg2: str | None) -> str | None:
        if action in (sqlite3.SQLITE_TRANSACTION, sqlite3.SQLITE_SAVEPOINT):
            return f"BEGIN/COMMIT/ROLLBACK/SAVEPOINT/RELEASE are refused: {_USE_TRANSACTION}"
        if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
            return "ATTACH/DETACH are refused: an object has exactly one database"
        if action == sqlite3.SQLITE_PRAGMA:
            name = (arg1 or "").lower()
            if name not in _ALLOWED_PRAGMAS:
                allowed = ", ".join(sorted(_ALLOWED_PRAGMAS))
                return f"PRAGMA {name} is refused; allowed pragmas: {allowed}"
        if action == sqlite3.SQLITE_FUNCTION:
            return None
        for table in (arg1, arg2):
            if table is not None and table.lower().startswith(_PREFIX):
                return (
                    f"{table!r} is reserved: names starting with {_PREFIX!r} "
                    "belong to the runtime"
                )
        return None


def _setup(db: sqlite3.Connection) -> None:
    guard = _Guard()
    db._td_guard = guard  # type: ignore[attr-defined]
    db.set_authorizer(guard.authorize)


def _guard(db: sqlite3.Connection) -> _Guard:
    guard: _Guard = db._td_guard  # type: ignore[attr-defined]
    return guard


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

    __slots__ = ("_engine", "_in_transaction", "_record", "_savepoint")

    def __init__(
        self, record: LiveObject, engine: StorageEngine, in_transaction: Callable[[], bool]
    ) -> None:
        self._record = record
        self._engine = engine
        self._in_transaction = in_transaction
        self._savepoint = False

    def __repr__(self) -> str:
        return f"<SqlStorage of {self._record.object_id!r}>"

    def _db(self) -> sqlite3.Connection:
        oid = self._record.object_id
        try:
            return self._engine.backend.sql_database(oid.namespace, oid.hex, _setup)
        except NotImplementedError:
            raise NotImplementedError(
                "this storage backend has no SQL database; use the key-value API"
            ) from None

    def exec(self, query: str, *bindings: Any) -> SqlCursor:
        """Run one SQL statement and return its rows.

        Writes are visible at once and committed with the object's next
        commit (replies wait for it, as for key-value writes).

        Raises:
            TypeError: the query is not a str or a binding has an unsupported type.
            SqlError: the statement manages transactions, attaches a
                database, runs a forbidden pragma or touches a ``_td_`` table.
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
        record = self._record
        record.check_alive()
        db = self._db()
        guard = _guard(db)
        began = not db.in_transaction
        if began:
            db.execute(_BEGIN)
        if self._in_transaction() and not self._savepoint:
            db.execute(_SAVEPOINT)
            self._savepoint = True
        guard.checking, guard.wrote, guard.reason = True, False, None
        try:
            cursor = db.execute(query, bindings)
            rows = cursor.fetchall()
            written = max(cursor.rowcount, 0) if guard.wrote else 0
            names = [column[0] for column in cursor.description or ()]
        except sqlite3.DatabaseError as exc:
            if guard.reason is not None:
                raise SqlError(guard.reason) from None
            missing = str(exc).lower().partition("no such table: ")[2]
            if missing.startswith(_PREFIX) or missing.startswith("main." + _PREFIX):
                # The runtime keeps no table here, but say so in its own words.
                raise SqlError(
                    f"{missing!r} is reserved: names starting with {_PREFIX!r} "
                    "belong to the runtime"
                ) from None
            raise exc from None
        finally:
            guard.checking = False
            if guard.wrote or (began and self._savepoint):
                # Committed by the storage engine with the object's batch.
                self._engine.batch_for(record).sql = db
            elif began:
                db.execute(_COMMIT)  # a read-only statement: end its read transaction
        return SqlCursor(rows, names, written)

    @property
    def database_size(self) -> int:
        """The size of the object's database in bytes."""
        db = self._db()
        pages = db.execute(f"PRAGMA page_count {_TAG}").fetchone()[0]
        size = db.execute(f"PRAGMA page_size {_TAG}").fetchone()[0]
        return int(pages * size)

    def _end_savepoint(self, *, commit: bool) -> None:
        if not self._savepoint:
            return
        self._savepoint = False
        db = self._db()
        if not commit:
            db.execute(_ROLLBACK_TO)
        db.execute(_RELEASE)

    def _drop_all(self) -> None:
        """Drop every user table, view, index and trigger (``delete_all``)."""
        db = self._db()
        if not db.in_transaction:
            db.execute(_BEGIN)
        rows: Sequence[tuple[str, str]] = db.execute(
            "SELECT type, name FROM sqlite_master "
            "WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%'"
        ).fetchall()
        for kind, name in rows:
            quoted = '"' + name.replace('"', '""') + '"'
            db.execute(f"DROP {kind.upper()} IF EXISTS {quoted}")
        self._engine.batch_for(self._record).sql = db
