"""The guard of user SQL: SQLite's authorizer, driven by allow-lists.

Every statement SQLite prepares on an object's database is shown to
:func:`authorize` action by action (read this table, call this function,
create this index, ...). User SQL gets exactly what the allow-lists below
name; anything else is refused with a message that says why and what to
use instead. The lists are documented in ``docs/storage.md``.

The runtime's own statements (ending or rolling back the object's implicit
transaction, the savepoint of ``storage.transaction()``) need two things
user SQL never gets: transaction control and the reserved ``_td_`` names.
They get them only inside :func:`runtime_statements`, a flag set while the
runtime itself runs a statement and cleared before control returns to user
code. No text a user can write changes a verdict: the flag is not a comment
or a tag in the statement.

One subtlety makes the flag enough: ``sqlite3`` caches prepared statements
by their text, and SQLite asks the authorizer only when it prepares. So a
statement prepared while the flag was set must never be found in that cache
by user code. The runtime's statements therefore either bypass the cache
(``Connection.commit()``, ``rollback()`` and ``executescript()`` prepare
their own statements) or are followed by :func:`expire_statements`, which
makes SQLite prepare (and authorize) every cached statement again before
its next run.

The verdicts are kept per thread (a statement is prepared and authorized in
the thread that runs it), so nothing here needs a lock.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from .._limits import MAX_VALUE_BYTES

__all__ = [
    "ALLOWED_FUNCTIONS",
    "ALLOWED_MODULES",
    "ALLOWED_PRAGMAS",
    "RESERVED_PREFIX",
    "NO_ATTACH",
    "GuardState",
    "authorize",
    "expire_statements",
    "install_guard",
    "runtime_statements",
    "state",
]

#: Table, index, view and trigger names that belong to the runtime.
RESERVED_PREFIX: Final = "_td_"
_C_INT_MAX: Final = 2**31 - 1

#: Functions user SQL may call: SQLite's core scalar, aggregate, window,
#: date/time, JSON and math functions, and FTS5's auxiliary functions.
ALLOWED_FUNCTIONS: Final = frozenset(
    {
        # core scalar functions (load_extension is left out)
        "abs", "changes", "char", "coalesce", "concat", "concat_ws", "format", "glob",
        "hex", "if", "ifnull", "iif", "instr", "last_insert_rowid", "length", "like",
        "likelihood", "likely", "lower", "ltrim", "max", "min", "nullif", "octet_length",
        "printf", "quote", "random", "randomblob", "replace", "round", "rtrim", "sign",
        "soundex", "sqlite_compileoption_get", "sqlite_compileoption_used",
        "sqlite_offset", "sqlite_source_id", "sqlite_version", "substr", "substring",
        "total_changes", "trim", "typeof", "unhex", "unicode", "unistr", "unlikely",
        "upper", "zeroblob",
        # aggregate functions
        "avg", "count", "group_concat", "median", "percentile", "percentile_cont",
        "percentile_disc", "string_agg", "sum", "total",
        # window functions
        "cume_dist", "dense_rank", "first_value", "lag", "last_value", "lead",
        "nth_value", "ntile", "percent_rank", "rank", "row_number",
        # date and time functions (CURRENT_TIMESTAMP and friends are functions too)
        "current_date", "current_time", "current_timestamp", "date", "datetime",
        "julianday", "strftime", "time", "timediff", "unixepoch",
        # JSON functions and operators
        "->", "->>", "json", "json_array", "json_array_length", "json_error_position",
        "json_extract", "json_group_array", "json_group_object", "json_insert",
        "json_object", "json_patch", "json_pretty", "json_quote", "json_remove",
        "json_replace", "json_set", "json_type", "json_valid", "jsonb", "jsonb_array",
        "jsonb_extract", "jsonb_group_array", "jsonb_group_object", "jsonb_insert",
        "jsonb_object", "jsonb_patch", "jsonb_remove", "jsonb_replace", "jsonb_set",
        # math functions
        "acos", "acosh", "asin", "asinh", "atan", "atan2", "atanh", "ceil", "ceiling",
        "cos", "cosh", "degrees", "exp", "floor", "ln", "log", "log10", "log2", "mod",
        "pi", "pow", "power", "radians", "sin", "sinh", "sqrt", "tan", "tanh", "trunc",
        # FTS5: the MATCH operator and the auxiliary functions
        "match", "bm25", "highlight", "snippet",
        # SQLite's own ALTER TABLE machinery: called by SQLite inside ALTER
        # TABLE, never callable from user SQL ("no such function")
        "sqlite_drop_column", "sqlite_rename_column", "sqlite_rename_quotefix",
        "sqlite_rename_table", "sqlite_rename_test",
    }
)  # fmt: skip

#: Virtual table modules ``CREATE VIRTUAL TABLE`` may use.
ALLOWED_MODULES: Final = frozenset({"fts5", "fts5vocab"})

#: Pragmas that only report and take no value (``PRAGMA page_count``).
_REPORTING_PRAGMAS: Final = frozenset(
    {"collation_list", "data_version", "freelist_count", "function_list", "page_count", "page_size"}
)
#: Pragmas that report on the table or index their argument names.
_INSPECTING_PRAGMAS: Final = frozenset(
    {
        "foreign_key_check",
        "foreign_key_list",
        "index_info",
        "index_list",
        "index_xinfo",
        "integrity_check",
        "quick_check",
        "table_info",
        "table_list",
        "table_xinfo",
    }
)
#: Every pragma user SQL may run (those of the first kind only without a value).
ALLOWED_PRAGMAS: Final = _REPORTING_PRAGMAS | _INSPECTING_PRAGMAS

#: Eponymous virtual tables user SQL may not touch: raw pages, and the
#: statements prepared on the connection (the runtime's among them).
_HIDDEN_TABLES: Final = frozenset({"sqlite_dbpage", "sqlite_stmt"})

_A = sqlite3
#: Statements allowed as they are (subject to the reserved-name check).
_PLAIN_ACTIONS: Final = frozenset(
    {
        _A.SQLITE_SELECT,
        _A.SQLITE_READ,
        _A.SQLITE_RECURSIVE,
        _A.SQLITE_INSERT,
        _A.SQLITE_UPDATE,
        _A.SQLITE_DELETE,
        _A.SQLITE_CREATE_TABLE,
        _A.SQLITE_CREATE_INDEX,
        _A.SQLITE_CREATE_VIEW,
        _A.SQLITE_CREATE_TRIGGER,
        _A.SQLITE_DROP_TABLE,
        _A.SQLITE_DROP_INDEX,
        _A.SQLITE_DROP_VIEW,
        _A.SQLITE_DROP_TRIGGER,
        _A.SQLITE_REINDEX,
        _A.SQLITE_ANALYZE,
    }
)
#: Actions whose second argument is a column, not an object name.
_COLUMN_ACTIONS: Final = frozenset({_A.SQLITE_SELECT, _A.SQLITE_READ, _A.SQLITE_UPDATE})
#: Actions that change the database (the statement must be committed).
_WRITE_ACTIONS: Final = frozenset(
    {
        _A.SQLITE_INSERT,
        _A.SQLITE_UPDATE,
        _A.SQLITE_DELETE,
        _A.SQLITE_CREATE_TABLE,
        _A.SQLITE_CREATE_INDEX,
        _A.SQLITE_CREATE_VIEW,
        _A.SQLITE_CREATE_TRIGGER,
        _A.SQLITE_DROP_TABLE,
        _A.SQLITE_DROP_INDEX,
        _A.SQLITE_DROP_VIEW,
        _A.SQLITE_DROP_TRIGGER,
        _A.SQLITE_REINDEX,
        _A.SQLITE_ANALYZE,
        _A.SQLITE_ALTER_TABLE,
        _A.SQLITE_CREATE_VTABLE,
        _A.SQLITE_DROP_VTABLE,
    }
)
_TEMP_ACTIONS: Final = frozenset(
    {
        _A.SQLITE_CREATE_TEMP_INDEX,
        _A.SQLITE_CREATE_TEMP_TABLE,
        _A.SQLITE_CREATE_TEMP_TRIGGER,
        _A.SQLITE_CREATE_TEMP_VIEW,
        _A.SQLITE_DROP_TEMP_INDEX,
        _A.SQLITE_DROP_TEMP_TABLE,
        _A.SQLITE_DROP_TEMP_TRIGGER,
        _A.SQLITE_DROP_TEMP_VIEW,
    }
)

_USE_TRANSACTION: Final = (
    "BEGIN/COMMIT/END/ROLLBACK/SAVEPOINT/RELEASE are refused: manage transactions with "
    "`async with ctx.storage.transaction()`; statements without an await between them "
    "already commit together"
)
NO_ATTACH: Final = (
    "ATTACH/DETACH/VACUUM are refused: an object has exactly one database, and the "
    "runtime manages its file"
)
_NO_TEMP: Final = (
    "temporary tables, indexes, views and triggers (and anything in the temp schema) are "
    "refused: the connection outlives the activation, and the temp schema is outside the "
    "object's database and its size limit; use a regular table (and drop it when done)"
)

#: The one schema user SQL may touch: the object's database. ``temp`` (as in
#: ``CREATE TABLE temp.t``, or a ``CREATE TRIGGER temp.tr ... ON main.t``,
#: which SQLite reports as a write to ``sqlite_temp_master``) is refused.
_MAIN: Final = "main"


class GuardState:
    """What the authorizer knows about the statement being prepared (one per thread).

    Attributes:
        runtime: True while the runtime runs its own statement.
        allow_alter: True while ``ALTER TABLE`` may run (inside the runtime's
            savepoint that checks what it renamed).
        reason: Why the last refusal happened (``None``: nothing refused).
        wrote: An action that changes the database was authorized.
        alter_table: The table an ``ALTER TABLE`` was refused for, pending a retry.
    """

    __slots__ = ("allow_alter", "alter_table", "reason", "runtime", "wrote")

    def __init__(self) -> None:
        self.runtime = False
        self.allow_alter = False
        self.reason: str | None = None
        self.wrote = False
        self.alter_table: str | None = None


class _PerThread(threading.local):
    # One attribute lookup per statement on the thread-local, then plain
    # attributes: the guard's state sits on the hot path of every statement.
    def __init__(self) -> None:
        self.state = GuardState()


_per_thread: Final = _PerThread()


def state() -> GuardState:
    """The guard's state for the current thread."""
    return _per_thread.state


@contextmanager
def runtime_statements() -> Iterator[None]:
    """Let the runtime's own statements control transactions and use ``_td_`` names.

    Everything else stays under the user rules, so a trigger or virtual
    table that runs inside such a statement gains nothing.
    """
    current = _per_thread.state
    previous = current.runtime
    current.runtime = True
    try:
        yield
    finally:
        current.runtime = previous


def install_guard(db: sqlite3.Connection, *, max_value_bytes: int = MAX_VALUE_BYTES) -> None:
    """Put the guard on a newly opened object database (the backend's ``setup``).

    Besides the authorizer, it bounds one string, BLOB or row to
    ``max_value_bytes`` (``open_runtime``'s, the limit of a stored value;
    SQLite's ``SQLITE_LIMIT_LENGTH``), so that neither
    ``randomblob(999999999)`` nor a row of many large values can allocate
    more than that at once. SQLite applies it to what a statement reads as
    well as to what it makes: a larger value stored before (when there was
    no such limit) is read with a larger ``max_value_bytes`` only.
    """
    # SQLite lowers a larger value to its own ceiling (10**9 by default);
    # setlimit() takes a C int.
    db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, min(max_value_bytes, _C_INT_MAX))
    db.set_authorizer(authorize)


def expire_statements(db: sqlite3.Connection) -> None:
    """Make SQLite prepare, and so authorize, every statement of ``db`` again.

    Setting the authorizer expires every prepared statement of the
    connection; their next run prepares them anew.
    """
    db.set_authorizer(authorize)


def _reserved(name: str) -> bool:
    return name[:4].lower() == RESERVED_PREFIX


def _reserved_refusal(name: str) -> str:
    return f"{name!r} is reserved: names starting with {RESERVED_PREFIX!r} belong to the runtime"


def _refusal(action: int, arg1: str | None, arg2: str | None, runtime: bool) -> str | None:
    """Why user SQL may not do ``action`` (``None``: it may)."""
    if action in _PLAIN_ACTIONS:
        if action in _COLUMN_ACTIONS:
            names: tuple[str | None, ...] = (arg1,)  # the second argument is a column
        else:
            names = (arg1, arg2)
        if arg1 in _HIDDEN_TABLES:
            return f"{arg1} is refused: it exposes the runtime's internals"
    elif action == _A.SQLITE_FUNCTION:
        name = (arg2 or "").lower()
        if name in ALLOWED_FUNCTIONS:
            return None
        return (
            f"function {arg2}() is refused: user SQL may call SQLite's core, aggregate, "
            "window, date/time, JSON and math functions and FTS5's auxiliary functions "
            "(see docs/storage.md)"
        )
    elif action == _A.SQLITE_PRAGMA:
        name = (arg1 or "").lower()
        if name in _INSPECTING_PRAGMAS or (name in _REPORTING_PRAGMAS and arg2 is None):
            names = (arg2,)
        else:
            allowed = ", ".join(sorted(ALLOWED_PRAGMAS))
            shown = name if arg2 is None else f"{name} = {arg2}"
            return f"PRAGMA {shown} is refused; allowed pragmas (without a value): {allowed}"
    elif action == _A.SQLITE_CREATE_VTABLE:
        module = (arg2 or "").lower()
        if module not in ALLOWED_MODULES:
            allowed = ", ".join(sorted(ALLOWED_MODULES))
            return f"virtual table module {arg2!r} is refused; allowed modules: {allowed}"
        names = (arg1,)
    elif action == _A.SQLITE_DROP_VTABLE:
        names = (arg1,)
    elif action == _A.SQLITE_ALTER_TABLE:
        names = (arg2,)
    elif action in (_A.SQLITE_TRANSACTION, _A.SQLITE_SAVEPOINT):
        return None if runtime else _USE_TRANSACTION
    elif action in (_A.SQLITE_ATTACH, _A.SQLITE_DETACH):
        return NO_ATTACH
    elif action in _TEMP_ACTIONS:
        return _NO_TEMP
    else:
        return f"this statement is refused (SQLite authorizer action {action})"
    if not runtime:
        for object_name in names:
            if object_name is not None and _reserved(object_name):
                return _reserved_refusal(object_name)
    return None


def _alter_reads_temp(action: int, table: str | None, current: GuardState) -> bool:
    """Whether this is SQLite's own ALTER TABLE reading or rewriting ``sqlite_temp_master``.

    User SQL can put nothing there, so this is allowed while the runtime
    lets an ALTER TABLE run.
    """
    return (
        current.allow_alter
        and table == "sqlite_temp_master"
        and action in (_A.SQLITE_READ, _A.SQLITE_UPDATE)
    )


def authorize(
    action: int, arg1: str | None, arg2: str | None, schema: str | None, _source: str | None
) -> int:
    """The authorizer callback of every object database (see the module docstring)."""
    current = _per_thread.state
    if schema is not None and schema != _MAIN and not _alter_reads_temp(action, arg1, current):
        reason: str | None = _NO_TEMP
    else:
        reason = _refusal(action, arg1, arg2, current.runtime)
    if reason is not None:
        current.reason = reason
        return sqlite3.SQLITE_DENY
    if action in _WRITE_ACTIONS:
        if action == _A.SQLITE_ALTER_TABLE and not (current.allow_alter or current.runtime):
            # The authorizer sees the old name only: run the statement again
            # inside a savepoint that checks the new one.
            current.alter_table = arg2
            return sqlite3.SQLITE_DENY
        current.wrote = True
    return sqlite3.SQLITE_OK
