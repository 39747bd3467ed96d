"""The SQL API on PostgreSQL: each object's SQLite database moves between nodes with it.

A runtime keeps a local copy of an object's database and stores the pages
each commit changed in the commit's PostgreSQL transaction; another node (a
runtime with its own copies) loads it from there when the object activates.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import psycopg
import pytest
import trio

import trio_durable as td
from trio_durable._storage._backend import Fence, ObjectWrite
from trio_durable._storage._postgres import PostgresBackend
from trio_durable.testing import evict

ROWS_FOR_64_KIB = 40  # rows of 2,000 bytes


@attrs.define(eq=False)
class Notes(td.DurableObject):
    """Notes in SQL, a counter in key-value storage, created in the constructor."""

    def __attrs_post_init__(self) -> None:
        self.ctx.storage.sql.exec(
            "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)"
        )

    async def add(self, body: str) -> int:
        self.ctx.storage.sql.exec("INSERT INTO notes (body) VALUES (?)", body)
        count = (await self.ctx.storage.get("count") or 0) + 1
        await self.ctx.storage.put("count", count)
        return count

    async def add_then_undo(self, body: str) -> None:
        async with self.ctx.storage.transaction() as txn:
            self.ctx.storage.sql.exec("INSERT INTO notes (body) VALUES (?)", body)
            txn.rollback()

    async def fill(self, rows: int) -> None:
        await self.ctx.storage.put("filled", rows)  # in the same batch as the inserts
        for _ in range(rows):
            self.ctx.storage.sql.exec("INSERT INTO notes (body) VALUES (?)", "x" * 2000)

    async def big_note(self, size: int) -> str:
        try:
            self.ctx.storage.sql.exec("INSERT INTO notes (body) VALUES (?)", "y" * size)
        except td.LimitExceededError as exc:
            return str(exc)
        return "stored"

    async def notes(self) -> list[str]:
        return [row["body"] for row in self.ctx.storage.sql.exec("SELECT body FROM notes")]

    async def state(self) -> tuple[list[str], Any]:
        return await self.notes(), await self.ctx.storage.get("count")

    async def filled(self) -> Any:
        return await self.ctx.storage.get("filled")


@attrs.define(eq=False)
class Jotter(td.DurableObject):
    """Uses SQL only when asked (no SQL in its constructor)."""

    async def jot(self, body: str) -> None:
        self.ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS jots (body TEXT)")
        self.ctx.storage.sql.exec("INSERT INTO jots VALUES (?)", body)

    async def wipe(self) -> None:
        await self.ctx.storage.delete_all()

    async def tables(self) -> list[str]:
        rows = self.ctx.storage.sql.exec("SELECT name FROM sqlite_master WHERE type = 'table'")
        return [row["name"] for row in rows]


OBJECTS: dict[str, type[td.DurableObject]] = {"notes": Notes, "jotters": Jotter}
Opener = Callable[..., contextlib.AbstractAsyncContextManager[td.Runtime]]


@pytest.fixture
def node(postgres_url: str) -> Opener:
    """Opens a runtime that plays a node: its own backend, so its own local copies."""

    def open_node(**options: Any) -> contextlib.AbstractAsyncContextManager[td.Runtime]:
        backend = PostgresBackend(postgres_url, **options)
        return td.open_runtime(OBJECTS, backend=backend)

    return open_node


async def test_sql_state_survives_a_move_to_another_node(node: Opener) -> None:
    async with node() as first:
        stub = first.namespace("notes").get_by_name("n")
        await stub.add("one")
        await stub.add("two")
    async with node() as second:  # nothing of the first's copies is here
        state = await second.namespace("notes").get_by_name("n").state()
    assert state == (["one", "two"], 2), "the SQL rows and the key-value count came along"


async def test_a_rolled_back_block_leaves_nothing_in_the_stored_database(node: Opener) -> None:
    async with node() as first:
        stub = first.namespace("notes").get_by_name("n")
        await stub.add("kept")
        await stub.add_then_undo("undone")
    async with node() as second:
        notes = await second.namespace("notes").get_by_name("n").notes()
    assert notes == ["kept"], "the rolled back insert never reached PostgreSQL"


async def test_delete_all_on_another_node_empties_the_stored_database(node: Opener) -> None:
    async with node() as first:
        await first.namespace("jotters").get_by_name("j").jot("one")
    async with node() as second:
        await second.namespace("jotters").get_by_name("j").wipe()  # no SQL call of its own
    async with node() as third:
        tables = await third.namespace("jotters").get_by_name("j").tables()
    assert tables == [], "a third node finds the database empty"


async def test_a_statement_past_the_size_limit_names_the_limit(node: Opener) -> None:
    async with node(max_sql_database_bytes=256 * 1024) as runtime:
        stub = runtime.namespace("notes").get_by_name("n")
        await stub.add("small")
        message = await stub.big_note(400_000)
        assert await stub.notes() == ["small"], "the statement was not applied"
    assert "limit of 262,144 bytes" in message, "the error names the limit"


async def test_statements_lost_to_the_size_limit_fail_the_call_and_store_nothing(
    node: Opener,
) -> None:
    async with node(max_sql_database_bytes=128 * 1024) as runtime:
        stub = runtime.namespace("notes").get_by_name("n")
        await stub.add("before")
        resets = runtime.statistics().resets
        with pytest.raises(td.LimitExceededError, match="limit of 131,072 bytes"):
            # Inserts, then one that does not fit: SQLite rolls the whole
            # transaction back, so the batch they share must not commit either.
            await stub.fill(ROWS_FOR_64_KIB * 4)
        with trio.fail_after(10):
            while runtime.statistics().resets == resets:  # the batch's commit fails, then
                await trio.sleep(0.01)
        assert await stub.filled() is None, "the key-value write of the batch was not stored"
        assert await stub.notes() == ["before"], "and no insert of it"


async def test_a_copy_stays_current_across_hibernation(
    node: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[tuple[str, str]] = []
    original = PostgresBackend._fetch_sql

    def counting(self: PostgresBackend, key: tuple[str, str], path: Any) -> int | None:
        loads.append(key)
        return original(self, key, path)

    monkeypatch.setattr(PostgresBackend, "_fetch_sql", counting)
    async with node() as runtime:
        stub = runtime.namespace("notes").get_by_name("n")
        await stub.add("one")
        await evict(stub)
        await stub.add("two")
        assert await stub.notes() == ["one", "two"]
    assert len(loads) == 1, "loaded once (it had none), then the copy was kept"


async def test_a_failed_commit_makes_the_next_activation_load_the_stored_database(
    node: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with node() as runtime:
        stub = runtime.namespace("notes").get_by_name("n")
        await stub.add("stored")
        backend = runtime.backend
        assert isinstance(backend, PostgresBackend)
        real = backend._commit_sync

        def fail_once(*args: Any) -> Any:
            monkeypatch.setattr(backend, "_commit_sync", real)
            raise psycopg.OperationalError("the network ate it (on purpose)")

        monkeypatch.setattr(backend, "_commit_sync", fail_once)
        with pytest.raises(td.ObjectResetError):
            await stub.add("lost")
        assert await stub.notes() == ["stored"], "the local copy went back to what is stored"


async def test_a_copy_made_under_one_epoch_is_not_current_under_another(
    postgres_url: str,
) -> None:
    backend = PostgresBackend(postgres_url, exclusive=False)
    await backend.open()
    hex_id = "05" + "0" * 62
    loader = backend.sql_loader("notes", hex_id, Fence("a", {5: 1}))
    assert loader is not None, "nothing is known here yet: load"
    await loader()
    assert backend.sql_loader("notes", hex_id, Fence("a", {5: 1})) is None, "current"
    later = backend.sql_loader("notes", hex_id, Fence("a", {5: 3}))
    assert later is not None, "the shard was taken again since: another node may have written"
    await backend.aclose()


def _write_sql(backend: PostgresBackend, hex_id: str, body: str) -> ObjectWrite:
    """What the storage engine does for a statement: run it, commit it, take the pages."""
    db = backend.sql_database("notes", hex_id, lambda db: None)
    db.execute("BEGIN")
    db.execute("CREATE TABLE IF NOT EXISTS t (body)")
    db.execute("INSERT INTO t VALUES (?)", (body,))
    db.execute("COMMIT")
    return ObjectWrite("notes", hex_id, None, sql=backend.sql_changes("notes", hex_id, db))


@pytest.fixture
async def two_nodes(postgres_url: str) -> AsyncIterator[tuple[PostgresBackend, PostgresBackend]]:
    nodes = (
        PostgresBackend(postgres_url, exclusive=False),
        PostgresBackend(postgres_url, exclusive=False),
    )
    for backend in nodes:
        await backend.open()
    yield nodes
    for backend in nodes:
        await backend.aclose()


async def test_a_stale_copy_cannot_overwrite_pages_another_node_stored(
    two_nodes: tuple[PostgresBackend, PostgresBackend],
) -> None:
    a, b = two_nodes
    hex_id = "07" + "0" * 62
    await a.commit([_write_sql(a, hex_id, "one")])
    loader = b.sql_loader("notes", hex_id, None)
    assert loader is not None
    await loader()  # b's copy: version 1
    await a.commit([_write_sql(a, hex_id, "two")])  # stored: version 2
    with pytest.raises(td.StorageError, match="another node changed it"):
        await b.commit([_write_sql(b, hex_id, "from a stale copy")])


async def test_a_copy_made_without_a_stored_database_cannot_replace_one(
    two_nodes: tuple[PostgresBackend, PostgresBackend],
) -> None:
    a, b = two_nodes
    hex_id = "08" + "0" * 62
    loader = b.sql_loader("notes", hex_id, None)
    assert loader is not None
    await loader()  # b learns there is none
    await a.commit([_write_sql(a, hex_id, "one")])
    with pytest.raises(td.StorageError, match="another node wrote it"):
        await b.commit([_write_sql(b, hex_id, "from a stale copy")])
