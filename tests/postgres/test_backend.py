"""The PostgreSQL backend on a real server: the URL, who may write, the ID secret, key order."""

from __future__ import annotations

import os
import socket
from typing import Any

import attrs
import psycopg
import pytest
import trio

import trio_durable as td
from trio_durable._storage._pg_schema import OWNER_LOCK_KEY
from trio_durable._storage._postgres import PostgresBackend
from trio_durable.testing import run_in_object

from ..storage.objects import OBJECTS


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# ------------------------------------------------------------------ the URL


@pytest.mark.parametrize(
    ("url", "error", "words"),
    [
        ("mysql://root@127.0.0.1/db", ValueError, "must be a postgresql:// URL"),
        ("data/db.sqlite3", ValueError, "must be a postgresql:// URL"),
        ("postgresql://127.0.0.1:notaport/td", ValueError, "is not valid"),
        (b"postgresql://127.0.0.1/td", TypeError, "a str"),
    ],
)
async def test_a_bad_database_url_is_refused_at_the_call(
    url: Any, error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        async with td.open_runtime(OBJECTS, database=url):
            pass


async def test_data_dir_and_database_together_are_a_type_error(tmp_path: Any) -> None:
    with pytest.raises(TypeError, match="only one of data_dir, database and backend"):
        async with td.open_runtime(OBJECTS, tmp_path, database="postgresql://h/db"):
            pass


async def test_an_unreachable_database_is_a_storage_error_naming_it_without_the_password() -> None:
    port = _closed_port()
    with pytest.raises(td.StorageError) as caught:
        async with td.open_runtime(
            OBJECTS, database=f"postgresql://ada:s3cret@127.0.0.1:{port}/td"
        ):
            pass
    message = str(caught.value)
    assert f"postgresql://ada@127.0.0.1:{port}/td" in message, "the database is named"
    assert "s3cret" not in message, "the password is not shown"


# ------------------------------------------------------------ who may write


async def test_a_second_runtime_on_the_database_is_refused_naming_the_first(
    postgres_url: str,
) -> None:
    async with td.open_runtime(OBJECTS, database=postgres_url):
        with pytest.raises(td.StorageError, match=f"process {os.getpid()} on"):
            async with td.open_runtime(OBJECTS, database=postgres_url):
                pass


async def test_the_database_is_free_again_once_its_runtime_closed(postgres_url: str) -> None:
    async with td.open_runtime(OBJECTS, database=postgres_url) as first:
        await first.namespace("boxes").get_by_name("b").put("k", 1)
    async with td.open_runtime(OBJECTS, database=postgres_url) as second:
        got = await second.namespace("boxes").get_by_name("b").get("k")
    assert got == 1, "the second runtime opened and reads what the first wrote"


async def test_a_cluster_node_cannot_open_a_database_a_single_runtime_uses(
    postgres_url: str,
) -> None:
    async with td.open_runtime(OBJECTS, database=postgres_url):
        node = PostgresBackend(postgres_url, exclusive=False)
        with pytest.raises(td.StorageError, match="in use by a single runtime"):
            await node.open()
        await node.aclose()


def _end_owner_session(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            # With a timeout, it returns once the session is gone (its lock too).
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_locks "
            "WHERE locktype = 'advisory' AND granted "
            "AND ((classid::bigint << 32) | objid::bigint) = %s",
            (OWNER_LOCK_KEY,),
        )


async def test_a_runtime_whose_database_was_taken_over_can_no_longer_commit(
    postgres_url: str,
) -> None:
    async with td.open_runtime(OBJECTS, database=postgres_url) as first:
        old = first.namespace("boxes").get_by_name("b")
        await old.put("k", "first")
        # Its owner session dies (a network cut, say) and another runtime starts.
        _end_owner_session(postgres_url)
        async with td.open_runtime(OBJECTS, database=postgres_url) as second:
            await second.namespace("boxes").get_by_name("b").put("k", "second")
            with pytest.raises(td.ObjectResetError) as caught:
                await old.put("k", "first, too late")
            assert "another runtime took over" in str(caught.value.__cause__), (
                "the commit was refused because the owner token changed"
            )
            assert await second.namespace("boxes").get_by_name("b").get("k") == "second", (
                "nothing of the fenced-out runtime was stored"
            )


# ---------------------------------------------------------------- the secret


async def test_nodes_starting_at_once_share_one_id_secret(postgres_url: str) -> None:
    nodes = [PostgresBackend(postgres_url, exclusive=False) for _ in range(3)]
    secrets: set[bytes] = set()

    async def start(node: PostgresBackend) -> None:
        await node.open()
        secrets.add(await node.load_secret())

    async with trio.open_nursery() as nursery:
        for node in nodes:
            nursery.start_soon(start, node)
    for node in nodes:
        await node.aclose()
    assert len(secrets) == 1, "every node got the same secret"


async def test_a_replaced_secret_is_refused(postgres_url: str) -> None:
    async with td.open_runtime(OBJECTS, database=postgres_url) as runtime:
        await runtime.namespace("boxes").get_by_name("b").put("k", 1)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE _td_meta SET value = %s WHERE key = 'id_secret'", (b"x" * 32,))
    with pytest.raises(td.StorageError, match="not the one its objects were created with"):
        async with td.open_runtime(OBJECTS, database=postgres_url):
            pass


async def test_a_lost_secret_is_refused(postgres_url: str) -> None:
    async with td.open_runtime(OBJECTS, database=postgres_url) as runtime:
        await runtime.namespace("boxes").get_by_name("b").put("k", 1)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DELETE FROM _td_meta WHERE key = 'id_secret'")
    with pytest.raises(td.StorageError, match="holds objects but no ID secret"):
        async with td.open_runtime(OBJECTS, database=postgres_url):
            pass


# --------------------------------------------------------------------- data


@attrs.define(eq=False)
class Named(td.DurableObject):
    async def object_name(self) -> str | None:
        return self.ctx.id.name


async def test_keys_of_any_character_list_in_utf8_byte_order(
    runtime_factory: Any,
) -> None:
    keys = ["b", "a\x00b", "a", "é", "\U0001f600", "Z", "\uffff"]

    async def body(obj: Any, ctx: td.ObjectContext) -> Any:
        await ctx.storage.put(dict.fromkeys(keys, 1))
        return list(await ctx.storage.list())

    async with runtime_factory(objects=OBJECTS) as runtime:
        await run_in_object(runtime.namespace("boxes").get_by_name("b"), body)

    async def listed_keys(obj: Any, ctx: td.ObjectContext) -> Any:
        return await ctx.storage.list()

    async with runtime_factory(objects=OBJECTS) as runtime:  # read back from the database
        listed = await run_in_object(runtime.namespace("boxes").get_by_name("b"), listed_keys)
    expected = sorted(keys, key=lambda key: key.encode())
    assert list(listed) == expected, "keys come back in the order of their UTF-8 bytes"


async def test_a_name_with_a_nul_character_survives_a_restart(runtime_factory: Any) -> None:
    async with runtime_factory(objects={"named": Named}) as runtime:
        assert await runtime.namespace("named").get_by_name("a\x00b").object_name() == "a\x00b"
    async with runtime_factory(objects={"named": Named}) as runtime:
        ids = await runtime.list_object_ids("named")
    assert [oid.name for oid in ids] == ["a\x00b"], "the directory kept the name"


async def test_the_writes_of_many_objects_share_commits(runtime_factory: Any) -> None:
    async with runtime_factory(objects=OBJECTS) as runtime:
        boxes = runtime.namespace("boxes")
        async with trio.open_nursery() as nursery:
            for n in range(200):
                nursery.start_soon(boxes.get_by_name(f"b{n}").put, "k", n)
        engine = runtime.storage_engine
    assert engine.objects_committed >= 200, "every object's write was committed"
    assert engine.commits < 50, f"{engine.commits} commits for 200 objects: they are grouped"
