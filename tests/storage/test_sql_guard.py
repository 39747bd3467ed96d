"""The SQL guard: what user SQL may and may not do to the runtime and the process."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import trio_durable as td
from trio_durable._limits import MAX_VALUE_BYTES
from trio_durable._storage import _sql
from trio_durable._storage._guard import install_guard
from trio_durable._storage._sqlite import sql_database_path
from trio_durable.testing import evict, run_in_object

from .objects import OBJECTS

FTS3_CHILD = Path(__file__).with_name("fts3_child.py")

# The comment the runtime once tagged its own statements with, to keep user
# text from reusing them; any user could read it from the module.
OLD_TAG = getattr(_sql, "_TAG", "/* td-0123456789abcdef */")

#: Statements that would end, restart or reshape the runtime's own
#: transaction, or reach outside the object's database. The texts the runtime
#: itself runs (whatever it tags them with) come first.
TRANSACTION_ATTEMPTS = [
    "COMMIT /* td-engine */",
    "ROLLBACK /* td-engine */",
    f"COMMIT {OLD_TAG}",
    f"BEGIN {OLD_TAG}",
    f"SAVEPOINT _td_txn {OLD_TAG}",
    f"RELEASE _td_txn {OLD_TAG}",
    f"ROLLBACK TO _td_txn {OLD_TAG}",
    "SAVEPOINT _td_txn",
    "RELEASE _td_txn",
    "ROLLBACK TO _td_txn",
    "RELEASE _td_alter",
    "commit /* td-engine */",
    "  COMMIT\n/* td-engine */  ",
    "CoMmIt",
    "COMMIT TRANSACTION",
    "END",
    "end transaction",
    "ROLLBACK",
    "ROLLBACK TRANSACTION",
    "RELEASE SAVEPOINT _td_txn",
    "SAVEPOINT mine",
    "BEGIN IMMEDIATE",
]

OTHER_ATTEMPTS = [
    "PRAGMA page_size = 1024",
    "PRAGMA journal_mode = DELETE",
    "PRAGMA main.synchronous = OFF",
    "PRAGMA writable_schema = ON",
    "PRAGMA query_only = 0",
    "VACUUM",
    "ATTACH DATABASE ':memory:' AS other",
    "DETACH DATABASE main",
    "SELECT load_extension('libm')",
    "CREATE TEMP TABLE scratch (x)",
    "SELECT sql FROM sqlite_stmt",
]

#: Objects in the temp schema, named rather than declared TEMP: they would
#: outlive the activation (the connection is kept) and sit outside the
#: object's database and its size limit.
TEMP_SCHEMA_ATTEMPTS = [
    "CREATE TABLE temp.tt (x)",
    "CREATE TABLE TEMP.tt (x)",
    "CREATE VIEW temp.tv AS SELECT 1",
    "CREATE TRIGGER temp.tr AFTER INSERT ON main.t BEGIN SELECT 1; END",
    "CREATE TRIGGER temp.tr AFTER INSERT ON t BEGIN INSERT INTO t (x) VALUES (99); END",
    "CREATE VIRTUAL TABLE temp.ft USING fts5(body)",
    "SELECT * FROM temp.sqlite_master",
    "SELECT * FROM sqlite_temp_master",
    "PRAGMA temp.table_info(t)",
]


async def _sql(stub: td.Stub, *statements: tuple[Any, ...]) -> Any:
    async def body(obj: Any, ctx: td.ObjectContext) -> Any:
        result = None
        for query, *bindings in statements:
            result = ctx.storage.sql.exec(query, *bindings)
        return result

    return await run_in_object(stub, body)


async def _rows(stub: td.Stub, query: str) -> list[tuple[Any, ...]]:
    return list((await _sql(stub, (query,))).raw())


@pytest.fixture
async def primed(box: td.Stub) -> td.Stub:
    """An object whose connection has run every kind of the runtime's own statements."""

    async def body(obj: Any, ctx: td.ObjectContext) -> None:
        sql = ctx.storage.sql
        sql.exec("CREATE TABLE t (x INTEGER)")
        sql.exec("INSERT INTO t VALUES (1)")
        await ctx.storage.sync()  # the engine's commit
        sql.exec("SELECT count(*) FROM t")  # a read, whose transaction ends at once
        async with ctx.storage.transaction():
            sql.exec("INSERT INTO t VALUES (2)")  # savepoint, release
        with pytest.raises(KeyError):
            async with ctx.storage.transaction():
                sql.exec("INSERT INTO t VALUES (3)")
                raise KeyError("roll back")  # rollback to the savepoint
        sql.exec("ALTER TABLE t ADD COLUMN y")  # the rename check's savepoint
        assert sql.database_size > 0
        await ctx.storage.sync()

    await run_in_object(box, body)
    return box


async def _attempt_inside_a_rolled_back_transaction(
    stub: td.Stub, attempt: str, expected: type[Exception] | tuple[type[Exception], ...]
) -> Exception:
    async def body(obj: Any, ctx: td.ObjectContext) -> Exception:
        sql = ctx.storage.sql
        with pytest.raises(KeyError, match="undo"):
            async with ctx.storage.transaction():
                sql.exec("INSERT INTO t (x) VALUES (20)")
                with pytest.raises(expected) as refused:
                    sql.exec(attempt)
                sql.exec("INSERT INTO t (x) VALUES (21)")
                raise KeyError("undo")
        return refused.value

    error: Exception = await run_in_object(stub, body)
    return error


@pytest.mark.parametrize("attempt", TRANSACTION_ATTEMPTS)
async def test_transaction_control_is_refused_and_changes_nothing(
    primed: td.Stub, runtime: td.Runtime, attempt: str
) -> None:
    error = await _attempt_inside_a_rolled_back_transaction(primed, attempt, td.SqlError)
    assert "transaction()" in str(error), f"the refusal names the alternative: {error}"
    rows = await _rows(primed, "SELECT x FROM t ORDER BY x")
    assert rows == [(1,), (2,)], f"the block's rows were rolled back after {attempt!r}: {rows}"


@pytest.mark.parametrize("attempt", TRANSACTION_ATTEMPTS[:3])
async def test_runtime_commits_normally_after_the_attempt(
    primed: td.Stub, runtime_factory: Any, attempt: str
) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> None:
        sql = ctx.storage.sql
        sql.exec("INSERT INTO t (x) VALUES (30)")
        with pytest.raises(td.SqlError):
            sql.exec(attempt)
        sql.exec("INSERT INTO t (x) VALUES (31)")
        await ctx.storage.put("after", True)
        await ctx.storage.sync()

    await run_in_object(primed, body)
    assert await primed.get("after") is True, "the object was not reset by a failed commit"
    await evict(primed)
    rows = await _rows(primed, "SELECT x FROM t WHERE x >= 30 ORDER BY x")
    assert rows == [(30,), (31,)], f"both inserts were committed by the runtime: {rows}"


@pytest.mark.parametrize("attempt", OTHER_ATTEMPTS)
async def test_statements_outside_the_allow_list_are_refused(primed: td.Stub, attempt: str) -> None:
    error = await _attempt_inside_a_rolled_back_transaction(primed, attempt, td.SqlError)
    assert "refused" in str(error), f"a clear refusal: {error}"
    rows = await _rows(primed, "SELECT x FROM t ORDER BY x")
    assert rows == [(1,), (2,)], f"the transaction is intact after {attempt!r}: {rows}"


@pytest.mark.parametrize("attempt", TEMP_SCHEMA_ATTEMPTS)
async def test_the_temp_schema_is_refused(primed: td.Stub, attempt: str) -> None:
    error = await _attempt_inside_a_rolled_back_transaction(primed, attempt, td.SqlError)
    assert "temp" in str(error) and "refused" in str(error), f"a clear refusal: {error}"
    # Nothing was made: an insert fires no trigger, and after an eviction the
    # object's connection (which outlives it) holds nothing in temp either.
    await _sql(primed, ("INSERT INTO t (x) VALUES (5)",))
    await evict(primed)
    rows = await _rows(primed, "SELECT x FROM t ORDER BY x")
    assert rows == [(1,), (2,), (5,)], f"no trigger ran after {attempt!r}: {rows}"


_TOO_BIG_READS = [
    ("SELECT randomblob(999999999)",),
    ("SELECT zeroblob(3000000)",),
    ("SELECT length(printf('%.*c', 3000000, 'x')) IS NULL OR zeroblob(3000000)",),
    ("SELECT group_concat(hex(zeroblob(100000))) FROM (SELECT 1 UNION ALL SELECT 2 "
     "UNION ALL SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 "
     "UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9 UNION ALL SELECT 10 "
     "UNION ALL SELECT 11)",),
]  # fmt: skip
_TOO_BIG_WRITES = [
    ("INSERT INTO t (x, y) VALUES (randomblob(1500000), randomblob(1500000))",),
    ("INSERT INTO t (x) VALUES (?)", b"x" * 3_000_000),
    ("INSERT INTO t (x) VALUES (?)", "x" * 3_000_000),
    ("INSERT INTO t (x) VALUES (zeroblob(3000000))",),
]


@pytest.mark.parametrize(
    ("statement", "writes"),
    [(statement, False) for statement in _TOO_BIG_READS]
    + [(statement, True) for statement in _TOO_BIG_WRITES],
    ids=lambda s: s[0][:40] if isinstance(s, tuple) else ("write" if s else "read"),
)
async def test_one_value_or_row_over_the_limit_is_refused(
    primed: td.Stub, statement: tuple[Any, ...], writes: bool
) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> list[Exception]:
        errors = []
        for _ in range(2):  # the second run reuses sqlite3's cached statement
            with pytest.raises(td.LimitExceededError) as refused:
                ctx.storage.sql.exec(*statement)
            errors.append(refused.value)
        return errors

    for error in await run_in_object(primed, body):
        assert f"{MAX_VALUE_BYTES:,} bytes" in str(error), f"the limit is named: {error}"
        assert ("the statement was not applied" in str(error)) == writes, error
        if not writes:
            assert "reads or makes" in str(error), error
    rows = await _rows(primed, "SELECT x FROM t ORDER BY x")
    assert rows == [(1,), (2,)], f"nothing was written: {rows}"


async def test_a_value_under_the_limit_is_stored(primed: td.Stub) -> None:
    size = MAX_VALUE_BYTES // 2
    await _sql(primed, ("INSERT INTO t (x) VALUES (randomblob(?))", size))
    rows = await _rows(primed, "SELECT length(x) FROM t WHERE typeof(x) = 'blob'")
    assert rows == [(size,)], rows


# --------------------------------------- values stored before the length limit existed

#: Over the limit: an object's database could hold it before there was one.
_OLD_BIG = 3_000_000


async def _database_with_an_old_big_row(data_dir: Path) -> Path:
    """An object's database holding a row with a value over the limit, written without it."""
    async with td.open_runtime(OBJECTS, data_dir=data_dir) as runtime:
        box = runtime.namespace("boxes").get_by_name("old")
        await _sql(box, ("CREATE TABLE t (id INTEGER PRIMARY KEY, big BLOB, note TEXT)",))
        path = sql_database_path(data_dir, "boxes", box.id.hex)
    db = sqlite3.connect(path)  # no guard, no length limit: as the runtime once wrote
    with db:
        db.execute("INSERT INTO t VALUES (1, ?, 'old'), (2, x'00', 'small')", (b"x" * _OLD_BIG,))
    db.close()
    return path


async def test_a_value_stored_over_the_limit_before_it_existed_reads_with_a_clear_error(
    tmp_path: Path,
) -> None:
    await _database_with_an_old_big_row(tmp_path)
    async with td.open_runtime(OBJECTS, data_dir=tmp_path) as runtime:
        box = runtime.namespace("boxes").get_by_name("old")

        async def body(obj: Any, ctx: td.ObjectContext) -> tuple[Exception, Exception]:
            sql = ctx.storage.sql
            with pytest.raises(td.LimitExceededError) as read:
                sql.exec("SELECT big FROM t WHERE id = 1").raw()
            with pytest.raises(td.LimitExceededError) as update:
                sql.exec("UPDATE t SET note = 'new' WHERE id = 1")
            return read.value, update.value

        read, update = await run_in_object(box, body)
        assert f"{MAX_VALUE_BYTES:,} bytes" in str(read), read
        assert "not applied" not in str(read), f"a read applies nothing: {read}"
        assert "reads or makes" in str(read) and "max_value_bytes" in str(read), read
        assert "the statement was not applied" in str(update), update
        # Its other rows and its length are readable; DELETE removes it.
        assert await _rows(box, "SELECT id, length(big), note FROM t ORDER BY id") == [
            (1, _OLD_BIG, "old"),
            (2, 1, "small"),
        ]
        await _sql(box, ("DELETE FROM t WHERE id = 1",))
        assert await _rows(box, "SELECT id FROM t") == [(2,)]


async def test_the_guard_with_a_larger_limit_reads_an_old_big_value(tmp_path: Path) -> None:
    path = await _database_with_an_old_big_row(tmp_path)
    db = sqlite3.connect(path)
    try:
        install_guard(db, max_value_bytes=4 * 1024 * 1024)
        assert db.execute("SELECT length(big), big FROM t WHERE id = 1").fetchone() == (
            _OLD_BIG,
            b"x" * _OLD_BIG,
        )
        with pytest.raises(sqlite3.DataError):
            db.execute("SELECT zeroblob(5000000)")  # still bounded, by the larger limit
    finally:
        db.close()


async def test_open_runtime_with_a_larger_max_value_bytes_reads_an_old_big_value(
    tmp_path: Path,
) -> None:
    await _database_with_an_old_big_row(tmp_path)
    async with td.open_runtime(
        OBJECTS, data_dir=tmp_path, max_value_bytes=4 * 1024 * 1024
    ) as runtime:
        box = runtime.namespace("boxes").get_by_name("old")
        assert await _rows(box, "SELECT length(big), length(CAST(big AS BLOB)) FROM t") == [
            (_OLD_BIG, _OLD_BIG),
            (1, 1),
        ]
        rows = await _rows(box, "SELECT big FROM t WHERE id = 1")
        assert rows == [(b"x" * _OLD_BIG,)]


async def test_vacuum_into_writes_no_file(primed: td.Stub, tmp_path: Path) -> None:
    target = tmp_path / "copy.db"
    error = await _attempt_inside_a_rolled_back_transaction(
        primed, f"VACUUM INTO '{target}'", td.SqlError
    )
    assert "VACUUM" in str(error), f"the refusal names VACUUM: {error}"
    assert not target.exists(), "no copy of the database was written"


@pytest.mark.parametrize(
    "attempt",
    [
        "SELECT 1; COMMIT",
        "SELECT 1; COMMIT /* td-engine */",
        "INSERT INTO t (x) VALUES (40); ROLLBACK",
        f"SELECT 1;\nRELEASE _td_txn {OLD_TAG}",
    ],
)
async def test_statement_hidden_after_a_semicolon_never_runs(primed: td.Stub, attempt: str) -> None:
    error = await _attempt_inside_a_rolled_back_transaction(
        primed, attempt, (td.SqlError, sqlite3.ProgrammingError)
    )
    assert "one statement" in str(error), f"only one statement per call: {error}"
    rows = await _rows(primed, "SELECT x FROM t ORDER BY x")
    assert rows == [(1,), (2,)], f"nothing ran and the block rolled back: {rows}"


# ------------------------------------------------------------------ renames


@pytest.mark.parametrize(
    "statement",
    [
        "ALTER TABLE t RENAME TO _td_x",
        "ALTER TABLE t RENAME TO _TD_upper",
        'ALTER TABLE t RENAME TO "_td_quoted"',
        "ALTER TABLE main.t RENAME TO [_td_bracketed]",
        "ALTER TABLE t /* a comment */ RENAME TO `_td_backticks`",
    ],
)
async def test_rename_into_runtime_names_is_refused(primed: td.Stub, statement: str) -> None:
    with pytest.raises(td.SqlError, match="reserved") as refused:
        await _sql(primed, (statement,))
    assert "_td_" in str(refused.value).lower(), f"the error names the prefix: {refused.value}"
    names = await _rows(primed, "SELECT name FROM sqlite_master WHERE type = 'table'")
    assert names == [("t",)], f"the table kept its name: {names}"


async def test_refused_rename_is_refused_again(primed: td.Stub) -> None:
    statement = "ALTER TABLE t RENAME TO _td_again"
    for attempt in range(3):
        with pytest.raises(td.SqlError, match="reserved"):
            await _sql(primed, (statement,))
        rows = await _rows(primed, "SELECT count(*) FROM t")
        assert rows == [(2,)], f"attempt {attempt + 1}: the table and its rows are intact"


async def test_rename_to_an_ordinary_name_works(primed: td.Stub) -> None:
    await _sql(primed, ("ALTER TABLE t RENAME TO renamed",))
    rows = await _rows(primed, "SELECT x FROM renamed ORDER BY x")
    assert rows == [(1,), (2,)], "the renamed table keeps its rows"


async def test_rename_inside_a_rolled_back_transaction_is_undone(primed: td.Stub) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> None:
        with pytest.raises(KeyError):
            async with ctx.storage.transaction():
                ctx.storage.sql.exec("ALTER TABLE t RENAME TO renamed")
                raise KeyError("undo")

    await run_in_object(primed, body)
    names = await _rows(primed, "SELECT name FROM sqlite_master WHERE type = 'table'")
    assert names == [("t",)], f"the rename was rolled back with the block: {names}"


# ---------------------------------------------------------------- functions


@pytest.mark.parametrize(
    "query",
    [
        "SELECT fts3_tokenizer('simple')",
        "SELECT fts3_tokenizer('evil', X'4141414141414141')",
        "SELECT load_extension('x')",
        "SELECT sqlite_log(1, 'x')",
        "SELECT rtreenode(2, X'00')",
        "SELECT fts5(NULL)",
    ],
)
async def test_functions_outside_the_allow_list_are_refused(box: td.Stub, query: str) -> None:
    with pytest.raises(td.SqlError, match=r"function \w+\(\) is refused") as refused:
        await _sql(box, (query,))
    assert "docs/storage.md" in str(refused.value), f"the error points to the list: {refused}"


async def test_allowed_functions_work(box: td.Stub) -> None:
    query = (
        "SELECT abs(-2) AS a, sqrt(16) AS s, json_extract('{\"k\": 3}', '$.k') AS j, "
        "'{\"k\": 4}' ->> 'k' AS arrow, date('2024-01-02') AS d, "
        "upper(coalesce(NULL, 'x')) AS u, printf('%03d', 7) AS p"
    )
    row = (await _sql(box, (query,))).one()
    expected = {"a": 2, "s": 4.0, "j": 3, "arrow": 4, "d": "2024-01-02", "u": "X", "p": "007"}
    assert row == expected, f"core, math, JSON and date functions are allowed: {row}"


async def test_aggregate_and_window_functions_work(box: td.Stub) -> None:
    rows = await _sql(
        box,
        ("CREATE TABLE n (v INTEGER)",),
        ("INSERT INTO n VALUES (1), (2), (3)",),
        (
            "SELECT v, row_number() OVER (ORDER BY v DESC) AS r, sum(v) OVER () AS total, "
            "group_concat(v) OVER (ORDER BY v) AS seen FROM n ORDER BY v",
        ),
    )
    assert list(rows) == [
        {"v": 1, "r": 3, "total": 6, "seen": "1"},
        {"v": 2, "r": 2, "total": 6, "seen": "1,2"},
        {"v": 3, "r": 1, "total": 6, "seen": "1,2,3"},
    ], "window and aggregate functions are allowed"


@pytest.mark.parametrize("module", ["fts3", "fts4", "rtree"])
async def test_virtual_table_modules_outside_the_allow_list_are_refused(
    box: td.Stub, module: str
) -> None:
    with pytest.raises(td.SqlError, match="module") as refused:
        await _sql(box, (f"CREATE VIRTUAL TABLE v USING {module}(a, b, c)",))
    assert "fts5" in str(refused.value), f"the error names the allowed modules: {refused}"


def test_fts3_tokenizer_cannot_crash_the_process(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(FTS3_CHILD), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, (
        f"the process survived (exit {done.returncode}); output:\n{done.stdout}{done.stderr}"
    )
    outcomes = [line.rpartition(" -> ")[2] for line in done.stdout.splitlines()]
    expected = ["SqlError", "SqlError", "SqlError", "OperationalError: no such table: w"]
    assert outcomes == expected, f"each step was refused:\n{done.stdout}"


# --------------------------------------------------------------------- FTS5


async def _search(stub: td.Stub, word: str) -> list[dict[str, Any]]:
    cursor = await _sql(
        stub,
        (
            "SELECT title, snippet(docs, 1, '[', ']', '…', 4) AS hit, "
            "highlight(docs, 0, '<', '>') AS lit, bm25(docs) < 0 AS ranked "
            "FROM docs WHERE docs MATCH ? ORDER BY rank",
            word,
        ),
    )
    return list(cursor)


@pytest.fixture
async def documents(box: td.Stub) -> td.Stub:
    await _sql(
        box,
        ("CREATE VIRTUAL TABLE docs USING fts5(title, body)",),
        ("INSERT INTO docs VALUES (?, ?)", "fox", "the quick brown fox jumps"),
        ("INSERT INTO docs VALUES (?, ?)", "dog", "a lazy dog sleeps"),
    )
    return box


async def test_fts5_table_can_be_searched(documents: td.Stub) -> None:
    found = await _search(documents, "quick")
    expected = [{"title": "fox", "hit": "the [quick] brown fox…", "lit": "fox", "ranked": 1}]
    assert found == expected, f"MATCH, snippet, highlight and bm25 work: {found}"


async def test_fts5_index_survives_eviction(documents: td.Stub) -> None:
    await evict(documents)
    found = await _search(documents, "lazy")
    assert [row["title"] for row in found] == ["dog"], f"found after eviction: {found}"


async def test_fts5_index_survives_restart(runtime_factory: Any) -> None:
    async with runtime_factory(objects=OBJECTS) as rt:
        stub = rt.namespace("boxes").get_by_name("search")
        await _sql(
            stub,
            ("CREATE VIRTUAL TABLE docs USING fts5(title, body)",),
            ("INSERT INTO docs VALUES (?, ?)", "fox", "the quick brown fox jumps"),
        )
    async with runtime_factory(objects=OBJECTS) as rt:
        found = await _search(rt.namespace("boxes").get_by_name("search"), "brown")
    assert [row["title"] for row in found] == ["fox"], f"found after a restart: {found}"


async def test_fts5_vocabulary_table_works(documents: td.Stub) -> None:
    cursor = await _sql(
        documents,
        ("CREATE VIRTUAL TABLE vocab USING fts5vocab(docs, 'row')",),
        ("SELECT term, doc FROM vocab WHERE term IN ('dog', 'fox') ORDER BY term",),
    )
    assert list(cursor.raw()) == [("dog", 1), ("fox", 1)], "fts5vocab reads the index"


async def test_delete_all_drops_fts5_tables(documents: td.Stub) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> Any:
        await ctx.storage.delete_all()
        return list(ctx.storage.sql.exec("SELECT name FROM sqlite_master").raw())

    assert await run_in_object(documents, body) == [], "the table and its shadow tables are gone"


# ------------------------------------------------------------ write detection


async def test_repeated_identical_insert_counts_its_rows(box: td.Stub) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> list[int]:
        sql = ctx.storage.sql
        sql.exec("CREATE TABLE r (x)")
        return [sql.exec("INSERT INTO r VALUES (1)").rows_written for _ in range(3)]

    written = await run_in_object(box, body)
    assert written == [1, 1, 1], f"a statement from sqlite3's cache counts too: {written}"


def test_a_max_value_bytes_above_what_sqlite_takes_is_its_ceiling() -> None:
    db = sqlite3.connect(":memory:")
    try:
        install_guard(db, max_value_bytes=5 * 10**9)  # more than a C int
        assert 0 < db.getlimit(sqlite3.SQLITE_LIMIT_LENGTH) <= 10**9
    finally:
        db.close()
