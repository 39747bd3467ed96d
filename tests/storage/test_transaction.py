"""``async with storage.transaction() as txn``: all or nothing."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

import trio_durable as td
from trio_durable.testing import evict, run_in_object


async def test_transaction_commits_its_writes(box: td.Stub) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> None:
        async with ctx.storage.transaction() as txn:
            await txn.put("a", 1)
            await txn.put({"b": 2})

    await run_in_object(box, body)
    await evict(box)
    assert (await box.get("a"), await box.get("b")) == (1, 2), "both writes are committed"


async def test_transaction_reads_its_own_writes(box: td.Stub) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> Any:
        await ctx.storage.put({"a": 1, "b": 2})
        async with ctx.storage.transaction() as txn:
            await txn.put("c", 3)
            await txn.delete("a")
            return await txn.get(["a", "b", "c"]), await txn.list()

    got, listed = await run_in_object(box, body)
    assert got == {"b": 2, "c": 3}, "get sees the transaction's writes"
    assert listed == {"b": 2, "c": 3}, "list sees them too"


async def test_writes_are_invisible_outside_until_the_end(box: td.Stub) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> Any:
        async with ctx.storage.transaction() as txn:
            await txn.put("a", 1)
            inside = await ctx.storage.get("a")
        return inside, await ctx.storage.get("a")

    assert await run_in_object(box, body) == (None, 1), "visible only once the block ends"


async def test_exception_rolls_back_and_propagates_with_its_type(box: td.Stub) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> Any:
        await ctx.storage.put("a", "before")
        with pytest.raises(KeyError, match="boom"):
            async with ctx.storage.transaction() as txn:
                await txn.put("a", "inside")
                await txn.put("b", "inside")
                raise KeyError("boom")
        return await ctx.storage.get(["a", "b"])

    assert await run_in_object(box, body) == {"a": "before"}, "nothing of the block remains"


async def test_rollback_discards_the_writes(box: td.Stub) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> Any:
        async with ctx.storage.transaction() as txn:
            await txn.put("a", 1)
            txn.rollback()
        return await ctx.storage.get("a")

    assert None is await run_in_object(box, body), "rollback() undoes the transaction"


async def test_txn_is_unusable_after_rollback(box: td.Stub) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> None:
        async with ctx.storage.transaction() as txn:
            txn.rollback()
            with pytest.raises(RuntimeError, match="rolled back"):
                await txn.put("a", 1)

    await run_in_object(box, body)


async def test_transactions_do_not_nest(box: td.Stub) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> None:
        async with ctx.storage.transaction():
            with pytest.raises(RuntimeError, match="do not nest"):
                async with ctx.storage.transaction():
                    pass

    await run_in_object(box, body)


async def test_transaction_writes_commit_together(runtime: td.Runtime, box: td.Stub) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> None:
        async with ctx.storage.transaction() as txn:
            for i in range(10):
                await txn.put(f"k{i}", i)
                await trio.lowlevel.checkpoint()  # even with other awaits inside

    before = runtime.storage_engine.commits
    await run_in_object(box, body)
    assert runtime.storage_engine.commits - before == 1, "one commit for the whole transaction"


async def test_no_other_event_runs_inside_a_transaction(box: td.Stub) -> None:
    order: list[str] = []
    inside = trio.Event()
    release = trio.Event()

    async def txn_body(obj: Any, ctx: td.ObjectContext) -> None:
        async with ctx.storage.transaction() as txn:
            order.append("txn start")
            inside.set()
            await release.wait()
            await txn.put("k", 1)
            order.append("txn end")

    async def other(obj: Any, ctx: td.ObjectContext) -> None:
        order.append("other")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_in_object, box, txn_body)
        await inside.wait()
        nursery.start_soon(run_in_object, box, other)
        await trio.testing.wait_all_tasks_blocked()
        release.set()
    assert order == ["txn start", "txn end", "other"], "the other event waited for the block"


async def test_transaction_list_honours_limit_with_deletions(box: td.Stub) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> Any:
        await ctx.storage.put({"a": 1, "b": 2, "c": 3, "d": 4})
        async with ctx.storage.transaction() as txn:
            await txn.delete(["a", "b"])
            return list(await txn.list(limit=2))

    assert await run_in_object(box, body) == ["c", "d"], "deleted keys are skipped"


# ------------------------------------------------ SQL in transactions that await


async def _table(ctx: td.ObjectContext) -> Any:
    sql = ctx.storage.sql
    sql.exec("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
    await ctx.storage.sync()
    return sql


async def test_sql_of_a_transaction_that_awaits_rolls_back(box: td.Stub) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> Any:
        sql = await _table(ctx)
        with pytest.raises(KeyError, match="undo"):
            async with ctx.storage.transaction():
                sql.exec("INSERT INTO t VALUES (1)")
                await trio.sleep(0.05)  # the committer runs meanwhile
                raise KeyError("undo")
        return list(sql.exec("SELECT x FROM t").raw())

    assert await run_in_object(box, body) == [], "the block's insert was rolled back"


async def test_sql_of_a_transaction_that_awaits_commits(box: td.Stub) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> None:
        sql = await _table(ctx)
        async with ctx.storage.transaction():
            sql.exec("INSERT INTO t VALUES (1)")
            await trio.sleep(0.05)  # the committer runs meanwhile
            sql.exec("INSERT INTO t VALUES (2)")

    await run_in_object(box, body)
    await evict(box)

    async def rows(obj: Any, ctx: td.ObjectContext) -> Any:
        return list(ctx.storage.sql.exec("SELECT x FROM t ORDER BY x").raw())

    assert await run_in_object(box, rows) == [(1,), (2,)], "both inserts were committed"


async def test_sync_inside_a_transaction_returns(box: td.Stub) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> Any:
        sql = await _table(ctx)
        with pytest.raises(KeyError, match="undo"):
            async with ctx.storage.transaction():
                sql.exec("INSERT INTO t VALUES (1)")
                with trio.fail_after(10):
                    await ctx.storage.sync()  # does not wait for the open block
                raise KeyError("undo")
        return list(sql.exec("SELECT x FROM t").raw())

    assert await run_in_object(box, body) == [], "sync() returned and the block still rolled back"


async def test_sql_before_a_rolled_back_transaction_is_kept(box: td.Stub) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> None:
        sql = await _table(ctx)
        sql.exec("INSERT INTO t VALUES (1)")
        with pytest.raises(KeyError, match="undo"):
            async with ctx.storage.transaction():
                sql.exec("INSERT INTO t VALUES (2)")
                await trio.sleep(0.05)
                raise KeyError("undo")

    await run_in_object(box, body)
    await evict(box)

    async def rows(obj: Any, ctx: td.ObjectContext) -> Any:
        return list(ctx.storage.sql.exec("SELECT x FROM t ORDER BY x").raw())

    assert await run_in_object(box, rows) == [(1,)], "the earlier insert stays, the block's is gone"
