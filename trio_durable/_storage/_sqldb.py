"""One object's SQL database and the statements the runtime runs on it.

User statements run inside an implicit transaction that the storage engine
commits with the object's other writes (:meth:`ObjectDatabase.commit`), or
that is ended at once when the statement changed nothing. Inside
``storage.transaction()`` they sit in a savepoint that the block's end
releases or rolls back. Every statement that controls these transactions is
run here, by a named method, under :func:`~._guard.runtime_statements`;
user text never reaches one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, Final

from .._exceptions import LimitExceededError, SqlError, StorageError
from ._guard import (
    NO_ATTACH,
    RESERVED_PREFIX,
    expire_statements,
    runtime_statements,
    state,
)

__all__ = ["ObjectDatabase", "StatementResult"]

_SAVEPOINT: Final = "SAVEPOINT _td_txn"
_RELEASE: Final = "RELEASE _td_txn"
_ROLLBACK_TO: Final = "ROLLBACK TO _td_txn"
_ALTER_SAVEPOINT: Final = "SAVEPOINT _td_alter"
_ALTER_RELEASE: Final = "RELEASE _td_alter"
_ALTER_ROLLBACK_TO: Final = "ROLLBACK TO _td_alter"
_RESERVED_NAMES: Final = (
    "SELECT name FROM sqlite_master WHERE lower(substr(name, 1, 4)) = '_td_' ORDER BY name"
)
_USER_OBJECTS: Final = (
    "SELECT type, name, sql FROM sqlite_master "
    "WHERE type IN ('table', 'view') AND substr(name, 1, 7) != 'sqlite_'"
)


#: SQLite's own ceiling of ``max_page_count`` is at least this; a backend's limit is lower.
_UNLIMITED_PAGES: Final = 1_073_741_823

#: What one user statement returned: its rows, its column names, the rows it wrote.
StatementResult = tuple[list[tuple[Any, ...]], list[str], int]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class ObjectDatabase:
    """An object's SQLite connection, as user SQL and the runtime use it.

    The connection is in a transaction exactly when it holds changes that
    the storage engine has been asked to commit.

    Args:
        connection: The object's connection, with the guard installed.
        commit_now: Commits the pending statements at once, ahead of the
            object's batch (when a ``storage.transaction()`` block begins
            with some pending); it may refuse by raising (a fenced commit).
    """

    __slots__ = ("_commit_now", "_lost", "_savepoint", "connection")

    def __init__(
        self,
        connection: sqlite3.Connection,
        commit_now: Callable[[ObjectDatabase], None],
    ) -> None:
        self.connection = connection
        self._commit_now = commit_now
        self._savepoint = False
        # Set when SQLite rolled back the whole transaction after an error
        # (SQLITE_FULL, an I/O error): its earlier statements are gone, so the
        # batch they belong to must fail rather than commit without them.
        self._lost: sqlite3.Error | None = None

    def __repr__(self) -> str:
        return f"<ObjectDatabase in_transaction={self.connection.in_transaction}>"

    # ------------------------------------------------------- user statements

    def execute(
        self,
        query: str,
        bindings: Sequence[Any],
        in_transaction: bool,
        on_pending: Callable[[ObjectDatabase], None],
    ) -> StatementResult:
        """Run one user statement under the guard.

        Args:
            query: The statement (one; sqlite3 refuses a second).
            bindings: Its parameters.
            in_transaction: Inside ``storage.transaction()``: the statement
                joins the block's savepoint.
            on_pending: Called (even if the statement fails) when the
                connection now holds changes to commit with the object's batch.

        Raises:
            SqlError: the guard refused the statement.
            sqlite3.Error: SQLite refused it (syntax, constraint, ...).
        """
        db = self.connection
        if in_transaction and not self._savepoint:
            if db.in_transaction:
                # Statements from before the block are made durable now, so
                # that the block's open savepoint never holds back their
                # commit (see commit()).
                self._commit_now(self)
            self._begin()
            began = True
            self._control(_SAVEPOINT)
            self._savepoint = True
        else:
            began = not db.in_transaction
            if began:
                self._begin()
        guard = state()
        guard.reason = guard.alter_table = None
        guard.wrote = False
        changes = db.total_changes
        try:
            try:
                cursor = db.execute(query, bindings)  # inlined _run(): the hot path
                rows = cursor.fetchall()
                names = [column[0] for column in cursor.description or ()]
                return rows, names, max(cursor.rowcount, 0)
            except sqlite3.DatabaseError as exc:
                if guard.reason is None and guard.alter_table is not None:
                    return self._run_alter(query, bindings)
                if not began and not db.in_transaction:
                    self._lost = exc
                    self._savepoint = False
                raise _translated(exc, guard.reason, db, query, bindings) from None
        finally:
            if guard.wrote or db.total_changes != changes or (began and self._savepoint):
                on_pending(self)
            elif began and db.in_transaction:
                self.commit()  # it changed nothing: end its read transaction now

    def _run(self, query: str, bindings: Sequence[Any]) -> StatementResult:
        cursor = self.connection.execute(query, bindings)
        rows = cursor.fetchall()
        return rows, [column[0] for column in cursor.description or ()], max(cursor.rowcount, 0)

    def _run_alter(self, query: str, bindings: Sequence[Any]) -> StatementResult:
        """Run an ``ALTER TABLE`` in a savepoint, undone if it made a reserved name.

        SQLite's authorizer is shown the table's old name only, so the new
        one is checked in ``sqlite_master`` once the statement has run.
        """
        self._control(_ALTER_SAVEPOINT)
        guard = state()
        keep = False
        try:
            guard.allow_alter = True
            try:
                result = self._run(query, bindings)
            except sqlite3.DatabaseError as exc:
                raise _translated(exc, guard.reason, self.connection, query, bindings) from None
            finally:
                guard.allow_alter = False
            reserved = self.connection.execute(_RESERVED_NAMES).fetchall()
            if reserved:
                name = reserved[0][0]
                raise SqlError(
                    f"{name!r} is reserved: names starting with {RESERVED_PREFIX!r} "
                    "belong to the runtime"
                )
            keep = True
            return result
        finally:
            if not keep:
                self._control(_ALTER_ROLLBACK_TO)
            self._control(_ALTER_RELEASE)

    # ------------------------------------------------- the runtime's statements

    def _begin(self) -> None:
        # executescript() prepares outside sqlite3's statement cache; it
        # commits an open transaction first, and none is open here.
        with runtime_statements():
            self.connection.executescript("BEGIN")

    def _control(self, statement: str) -> None:
        # Runs through sqlite3's statement cache, so every statement is
        # expired afterwards: user text equal to ours is authorized anew.
        try:
            with runtime_statements():
                self.connection.execute(statement)
        finally:
            expire_statements(self.connection)

    def commit(self) -> None:
        """Commit the implicit transaction, if one is open (the storage engine's commit).

        While a ``storage.transaction()`` block has its savepoint open, the
        statements in it are not final: the commit waits, and the block hands
        them to the object's next batch when it ends (:meth:`end_savepoint`).

        Raises:
            StorageError: SQLite rolled back the transaction after an error, so
                statements of this batch are lost (the batch must fail).
        """
        if self._lost is not None:
            raise StorageError(
                "SQLite rolled back the object's SQL transaction after an error "
                f"({self._lost}); the statements since its last commit are lost"
            ) from self._lost
        if self._savepoint:
            return
        if self.connection.in_transaction:
            with runtime_statements():
                self.connection.commit()  # prepared outside the statement cache

    def rollback(self) -> None:
        """Roll back the implicit transaction (the batch it belongs to failed)."""
        self._savepoint = False
        self._lost = None
        try:
            if self.connection.in_transaction:
                with runtime_statements():
                    self.connection.rollback()
        finally:
            # The schema may be back to an older version, under which some
            # cached statements were authorized: authorize them again.
            expire_statements(self.connection)

    def end_savepoint(self, *, commit: bool, on_pending: Callable[[ObjectDatabase], None]) -> None:
        """End the savepoint of ``storage.transaction()``: keep or undo its statements.

        ``on_pending`` is called when kept statements now wait for a commit.
        """
        if not self._savepoint:
            return
        self._savepoint = False
        if commit:
            self._control(_RELEASE)
            on_pending(self)
        else:
            self._control(_ROLLBACK_TO)
            self._control(_RELEASE)
            # The transaction began with the block (earlier statements were
            # committed then), so nothing is left in it.
            self.commit()

    def drop_all(self, on_pending: Callable[[ObjectDatabase], None]) -> None:
        """Drop every user table and view (``delete_all``), in the implicit transaction."""
        db = self.connection
        if not db.in_transaction:
            self._begin()
        try:
            with runtime_statements():
                objects = sorted(db.execute(_USER_OBJECTS).fetchall(), key=_drop_order)
                for kind, name, _sql in objects:
                    db.execute(f"DROP {kind.upper()} IF EXISTS {_quote(name)}")
        finally:
            expire_statements(db)
            on_pending(self)

    def size(self) -> int:
        """The database's size in bytes."""
        db = self.connection
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        return int(pages * page_size)


def _drop_order(row: tuple[str, str, str | None]) -> tuple[bool, bool]:
    # Virtual tables first (they drop their own shadow tables), then views.
    kind, _name, sql = row
    return (not (sql or "").upper().startswith("CREATE VIRTUAL"), kind != "view")


def _runtime_pragma(db: sqlite3.Connection, name: str) -> int:
    """Read a pragma the guard refuses to user SQL, as the runtime."""
    db.set_authorizer(None)
    try:
        return int(db.execute(f"PRAGMA {name}").fetchone()[0])
    finally:
        # Puts the guard back and expires every cached statement, so that
        # user text equal to ours is authorized anew.
        expire_statements(db)


def _full(exc: sqlite3.DatabaseError, db: sqlite3.Connection) -> Exception:
    """The error for SQLITE_FULL: the backend's size limit, or a full disk."""
    page_size = _runtime_pragma(db, "page_size")
    most = _runtime_pragma(db, "max_page_count")
    if most < _UNLIMITED_PAGES:  # the backend set a limit (SQLite's own is far higher)
        limit = most * page_size
        return LimitExceededError(
            f"the object's SQL database would grow past its limit of {limit:,} bytes "
            f"({most:,} pages of {page_size:,}); the statement was not applied"
        )
    return StorageError(f"the object's SQL database cannot grow: {exc} (is the disk full?)")


def _too_big(db: sqlite3.Connection, query: str, bindings: Sequence[Any]) -> LimitExceededError:
    """The error for SQLITE_TOOBIG: one string, BLOB or row over the length limit.

    SQLite applies the limit to what a statement reads as well as to what it
    makes, so a read fails on a value stored when the limit was higher (or
    absent): its error says how to read it, and does not claim that
    something was not applied.
    """
    limit = db.getlimit(sqlite3.SQLITE_LIMIT_LENGTH)
    over = (
        f"over the limit of {limit:,} bytes for one string, BLOB or row in an object's "
        "SQL database (open_runtime's max_value_bytes)"
    )
    if _writes(db, query, bindings):
        return LimitExceededError(
            f"a string, BLOB or row of the statement would be {over}; the statement was not applied"
        )
    return LimitExceededError(
        f"a string, BLOB or row that the statement reads or makes is {over}. A value "
        "stored when there was no such limit can be read with a larger max_value_bytes; "
        "length() and DELETE work on it without"
    )


def _writes(db: sqlite3.Connection, query: str, bindings: Sequence[Any]) -> bool:
    """Whether ``query`` writes, as the guard sees it when SQLite prepares it anew.

    The failed run may have used a cached statement, which SQLite does not
    authorize again; ``EXPLAIN`` prepares the statement (the authorizer sees
    each of its actions) without running it. The guard's state of the
    failed statement is put back.
    """
    guard = state()
    saved = guard.wrote, guard.reason, guard.alter_table
    guard.wrote, guard.alter_table = False, None
    expire_statements(db)  # a cached EXPLAIN is prepared again when it runs
    try:
        # NULLs in place of the values: an oversized one would fail to bind
        # before a cached statement is prepared again.
        db.execute("EXPLAIN " + query, [None] * len(bindings)).fetchall()
    except sqlite3.Error:
        pass  # what was authorized before the failure is known
    finally:
        writes = guard.wrote or guard.alter_table is not None
        guard.wrote, guard.reason, guard.alter_table = saved
    return writes


def _translated(
    exc: sqlite3.DatabaseError,
    reason: str | None,
    db: sqlite3.Connection,
    query: str,
    bindings: Sequence[Any],
) -> Exception:
    """The error a user sees for a statement that SQLite or the guard refused."""
    if reason is not None:
        return SqlError(reason)
    code = getattr(exc, "sqlite_errorcode", None)
    if code == sqlite3.SQLITE_FULL:
        return _full(exc, db)
    if code == sqlite3.SQLITE_TOOBIG:
        return _too_big(db, query, bindings)
    if str(exc) == "cannot VACUUM from within a transaction":
        # SQLite refuses VACUUM before the authorizer sees its ATTACH, because
        # user SQL always runs inside the object's transaction.
        return SqlError(NO_ATTACH)
    missing = str(exc).lower().partition("no such table: ")[2]
    if missing.startswith(RESERVED_PREFIX) or missing.startswith("main." + RESERVED_PREFIX):
        # The runtime keeps no table here, but say so in its own words.
        return SqlError(
            f"{missing!r} is reserved: names starting with {RESERVED_PREFIX!r} "
            "belong to the runtime"
        )
    return exc
