"""``ctx.storage.sql``: synchronous SQL on the object's own database."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

import trio_durable as td
from trio_durable.testing import evict, run_in_object

from .objects import OBJECTS


async def _sql(stub: td.Stub, *statements: tuple[Any, ...]) -> Any:
    async def body(obj: Any, ctx: td.ObjectContext) -> Any:
        result = None
        for query, *bindings in statements:
            result = ctx.storage.sql.exec(query, *bindings)
        return result

    return await run_in_object(stub, body)


async def _refused(stub: td.Stub, query: str) -> td.SqlError:
    with pytest.raises(td.SqlError) as info:
        await _sql(stub, (query,))
    return info.value


@pytest.fixture
async def table(box: td.Stub) -> td.Stub:
    await _sql(
        box,
        ("CREATE TABLE people (name TEXT, age INTEGER)",),
        ("INSERT INTO people VALUES (?, ?), (?, ?)", "ada", 36, "bob", 20),
    )
    return box


async def test_rows_are_dicts(table: td.Stub) -> None:
    cursor = await _sql(table, ("SELECT name, age FROM people ORDER BY name",))
    expected = [{"name": "ada", "age": 36}, {"name": "bob", "age": 20}]
    assert expected == list(cursor), "iteration gives dicts"


async def test_raw_gives_tuples(table: td.Stub) -> None:
    cursor = await _sql(table, ("SELECT name, age FROM people ORDER BY name",))
    assert list(cursor.raw()) == [("ada", 36), ("bob", 20)], "raw() gives tuples"


async def test_column_names(table: td.Stub) -> None:
    cursor = await _sql(table, ("SELECT age, name AS who FROM people",))
    assert cursor.column_names == ["age", "who"], "in select order, with aliases"


async def test_one_returns_the_single_row(table: td.Stub) -> None:
    cursor = await _sql(table, ("SELECT age FROM people WHERE name = ?", "ada"))
    assert cursor.one() == {"age": 36}, "exactly one row"


@pytest.mark.parametrize("where", ["1 = 0", "1 = 1"])
async def test_one_refuses_zero_or_many_rows(table: td.Stub, where: str) -> None:
    cursor = await _sql(table, (f"SELECT age FROM people WHERE {where}",))
    with pytest.raises(ValueError, match="expected exactly one row"):
        cursor.one()


async def test_rows_written_and_read(table: td.Stub) -> None:
    cursor = await _sql(table, ("UPDATE people SET age = age + 1",))
    assert (cursor.rows_written, cursor.rows_read) == (2, 2), "two rows changed"


async def test_database_size_grows(box: td.Stub) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> Any:
        sql = ctx.storage.sql
        before = sql.database_size
        sql.exec("CREATE TABLE blobs (b BLOB)")
        sql.exec("INSERT INTO blobs VALUES (?)", b"x" * 100_000)
        return before, sql.database_size

    before, after = await run_in_object(box, body)
    assert after >= before + 100_000, f"size grew from {before} to {after}"


async def test_sql_writes_survive_eviction_and_restart(runtime_factory: Any) -> None:
    async with runtime_factory(objects=OBJECTS) as rt:
        stub = rt.namespace("boxes").get_by_name("sql")
        await _sql(stub, ("CREATE TABLE t (x)",), ("INSERT INTO t VALUES (42)",))
        await evict(stub)
    async with runtime_factory(objects=OBJECTS) as rt:
        cursor = await _sql(rt.namespace("boxes").get_by_name("sql"), ("SELECT x FROM t",))
    assert list(cursor.raw()) == [(42,)], "the row is on disk"


async def test_each_object_has_its_own_database(runtime: td.Runtime) -> None:
    boxes = runtime.namespace("boxes")
    await _sql(boxes.get_by_name("one"), ("CREATE TABLE mine (x)",))
    cursor = await _sql(boxes.get_by_name("two"), ("SELECT name FROM sqlite_master",))
    assert list(cursor) == [], "another object sees no table"


async def test_sql_in_rolled_back_transaction_is_undone(table: td.Stub) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> Any:
        with pytest.raises(KeyError):
            async with ctx.storage.transaction():
                ctx.storage.sql.exec("DELETE FROM people")
                raise KeyError("undo")
        return ctx.storage.sql.exec("SELECT count(*) AS n FROM people").one()

    assert await run_in_object(table, body) == {"n": 2}, "the DELETE was rolled back"


async def test_delete_all_drops_sql_tables(table: td.Stub) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> Any:
        await ctx.storage.delete_all()
        return list(ctx.storage.sql.exec("SELECT name FROM sqlite_master"))

    assert await run_in_object(table, body) == [], "no table is left"


@pytest.mark.parametrize(
    "query",
    ["BEGIN", "BEGIN IMMEDIATE", "COMMIT", "ROLLBACK", "SAVEPOINT s", "RELEASE s", "END"],
)
async def test_transaction_statements_are_refused(box: td.Stub, query: str) -> None:
    error = await _refused(box, query)
    assert "transaction()" in str(error), f"the error names the alternative: {error}"


async def test_attach_is_refused(box: td.Stub, tmp_path: Any) -> None:
    error = await _refused(box, f"ATTACH DATABASE '{tmp_path}/x.db' AS other")
    assert "ATTACH" in str(error), f"a clear error: {error}"


@pytest.mark.parametrize("query", ["PRAGMA journal_mode=DELETE", "PRAGMA writable_schema=1"])
async def test_setting_pragmas_is_refused(box: td.Stub, query: str) -> None:
    error = await _refused(box, query)
    assert "PRAGMA" in str(error), f"a clear error: {error}"


async def test_informational_pragma_is_allowed(table: td.Stub) -> None:
    cursor = await _sql(table, ("PRAGMA table_info(people)",))
    assert [row["name"] for row in cursor] == ["name", "age"], "table_info works"


@pytest.mark.parametrize(
    "query",
    [
        "CREATE TABLE _td_mine (x)",
        "CREATE TABLE _TD_upper (x)",
        "SELECT * FROM _td_kv",
        "DROP TABLE _td_kv",
    ],
)
async def test_runtime_tables_are_off_limits(box: td.Stub, query: str) -> None:
    error = await _refused(box, query)
    assert "reserved" in str(error) or "_td_" in str(error), f"a clear error: {error}"


async def test_refused_statement_changes_nothing(table: td.Stub) -> None:
    await _refused(table, "ROLLBACK")
    cursor = await _sql(table, ("SELECT count(*) AS n FROM people",))
    assert cursor.one() == {"n": 2}, "the earlier rows are intact"


async def test_syntax_error_is_sqlite_error(box: td.Stub) -> None:
    with pytest.raises(sqlite3.OperationalError):
        await _sql(box, ("SELEC nothing",))


async def test_query_must_be_str(box: td.Stub) -> None:
    with pytest.raises(TypeError, match="str"):
        await _sql(box, (b"SELECT 1",))


async def test_unsupported_binding_is_type_error(box: td.Stub) -> None:
    with pytest.raises(TypeError, match="binding 1"):
        await _sql(box, ("SELECT ?", [1, 2]))
