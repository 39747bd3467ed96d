"""Two cluster members in one process sharing one PostgreSQL database.

``tests/cluster/test_members.py`` on PostgreSQL: ``open_runtime(database=...,
cluster=...)`` makes each member's backend share the database and keeps the
leases in it (``PgLeaseStore``), so commits are fenced by the epochs of the
same rows. Then what only a database shared by nodes adds: an object's SQL
database follows it to the member that takes its shard, and a member that
lost a shard without noticing cannot commit for it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import trio_durable as td
from trio_durable._cluster._dispatch import ClusterDispatcher
from trio_durable._cluster._member import ClusterSpec
from trio_durable._cluster._pg_leases import PgLeaseStore
from trio_durable._cluster._shards import LocalShards
from trio_durable._ids import shard_of
from trio_durable._storage._postgres import PostgresBackend

from ..cluster.test_members import (
    Counter,
    _held,
    test_calls_through_both_members_reach_one_instance,
    test_concurrent_increments_through_both_members_count_exactly,
    test_the_shards_are_split_between_the_members,
)

__all__ = [
    "test_calls_through_both_members_reach_one_instance",
    "test_concurrent_increments_through_both_members_count_exactly",
    "test_the_shards_are_split_between_the_members",
]

LEASE = 1.0


@attrs.define(eq=False)
class Journal(td.DurableObject):
    def __attrs_post_init__(self) -> None:
        self.ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS entries (body TEXT)")

    async def write(self, body: str) -> None:
        self.ctx.storage.sql.exec("INSERT INTO entries VALUES (?)", body)

    async def entries(self) -> list[str]:
        return [row["body"] for row in self.ctx.storage.sql.exec("SELECT body FROM entries")]


OBJECTS: dict[str, type[td.DurableObject]] = {"counters": Counter, "journals": Journal}


@pytest.fixture
def run_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="td-")  # short: AF_UNIX paths are limited
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _member(
    url: str, run_dir: str, slot: int, lease: float = LEASE
) -> AbstractAsyncContextManager[td.Runtime]:
    return td.open_runtime(
        OBJECTS,
        database=url,
        cluster=ClusterSpec(slot=slot, run_dir=run_dir, lease_seconds=lease),
    )


async def _until_split(a: td.Runtime, b: td.Runtime) -> None:
    with trio.fail_after(20):
        while not (_held(a) and _held(b) and len(_held(a) | _held(b)) == 256):
            await trio.sleep(0.05)


@pytest.fixture
async def pair(postgres_url: str, run_dir: str) -> AsyncIterator[tuple[td.Runtime, td.Runtime]]:
    async with AsyncExitStack() as stack:
        a, b = [
            await stack.enter_async_context(_member(postgres_url, run_dir, slot)) for slot in (0, 1)
        ]
        await _until_split(a, b)
        yield a, b


def _owned_by(runtime: td.Runtime, namespace: str) -> str:
    ns = runtime.namespace(namespace)
    for n in range(10_000):
        if shard_of(ns.id_from_name(f"obj-{n}").hex) in _held(runtime):
            return f"obj-{n}"
    raise AssertionError("no name found in the shards of this member")


async def test_a_cluster_member_shares_the_database(pair: tuple[td.Runtime, td.Runtime]) -> None:
    for runtime in pair:
        backend = runtime.backend
        assert isinstance(backend, PostgresBackend), "database= made a PostgreSQL backend"
        assert not backend.exclusive, "shared by the members, fenced by epoch"


async def test_sql_state_follows_its_object_to_the_member_that_takes_its_shard(
    postgres_url: str, run_dir: str
) -> None:
    async with _member(postgres_url, run_dir, 0) as a:
        async with _member(postgres_url, run_dir, 1) as b:
            await _until_split(a, b)
            name = _owned_by(b, "journals")
            stub = a.namespace("journals").get_by_name(name)  # runs in b
            await stub.write("written in b")
        # b left: a takes its shards and loads the object's SQL database.
        with trio.fail_after(10):
            while len(_held(a)) < 256:
                await trio.sleep(0.05)
        await stub.write("written in a")
        entries = await stub.entries()
    assert entries == ["written in b", "written in a"], "the SQL rows moved with the object"


async def _hear_nothing(self: PgLeaseStore, wake: Any, **options: Any) -> None:
    await trio.sleep_forever()


async def test_a_member_that_lost_its_shard_unknowingly_cannot_commit_sql_for_it(
    postgres_url: str, run_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = 60.0  # rounds every 15 s: the stale member does not notice by itself in time
    # Cut off from the lease hints too, as a partitioned or paused member is.
    monkeypatch.setattr(PgLeaseStore, "watch", _hear_nothing)
    async with AsyncExitStack() as stack:
        a, b = [
            await stack.enter_async_context(_member(postgres_url, run_dir, slot, slow))
            for slot in (0, 1)
        ]
        assert a.cluster is not None and b.cluster is not None
        name = _owned_by(a, "journals")
        via_a = a.namespace("journals").get_by_name(name)
        await via_a.write("before")
        # a is declared dead; b takes its shards at a new epoch.
        store = PgLeaseStore(postgres_url)
        await store.revoke(a.cluster.member.member_id)
        await store.aclose()
        await b.cluster.wait_for_round()
        assert shard_of(via_a.id.hex) in _held(a), "a has not noticed: it still runs the object"
        with pytest.raises(td.ObjectResetError):
            await via_a.write("too late")  # runs in a: the fence refuses its commit
        via_b = b.namespace("journals").get_by_name(name)
        assert await via_b.entries() == ["before"], "the stale member's SQL row never landed"


async def _reset_of_a_call_in_flight(runtime: td.Runtime, shards: LocalShards) -> BaseException:
    """Start a slow call, make the member lose its object's shard, return what the caller got."""
    stub = runtime.namespace("counters").get_by_name("in-flight")
    caught: list[BaseException] = []

    async def call() -> None:
        try:
            await stub.slow()
        except td.ObjectResetError as exc:
            caught.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call)
        await trio.testing.wait_all_tasks_blocked()
        shards.shards_lost({shard_of(stub.id.hex)})
    assert len(caught) == 1, "the call in flight was reset"
    # The caller's error says the call was in flight; its cause, why the object was reset.
    assert isinstance(caught[0].__cause__, td.ObjectResetError)
    return caught[0].__cause__


def _shards_of(runtime: td.Runtime) -> LocalShards:
    dispatcher = runtime.namespace("counters")._dispatcher
    assert isinstance(dispatcher, ClusterDispatcher) and dispatcher.shards is not None
    return dispatcher.shards


async def test_a_reset_after_the_storage_was_out_of_reach_is_caused_by_it(
    postgres_url: str, run_dir: str
) -> None:
    async with _member(postgres_url, run_dir, 0) as runtime:
        shards = _shards_of(runtime)
        away = td.StorageError("the database is unreachable")
        shards.storage_unreachable = lambda: away
        reset = await _reset_of_a_call_in_flight(runtime, shards)
    assert reset.__cause__ is away, "the gateway answers 503 for a reset caused by the storage"
    assert "lapsed while the storage was out of reach" in str(reset)


@pytest.mark.parametrize(
    ("held_again", "reason"),
    [(True, "lapsed before it was renewed"), (False, "another process")],
)
async def test_a_reset_for_a_lost_shard_says_why(
    postgres_url: str, run_dir: str, held_again: bool, reason: str
) -> None:
    async with _member(postgres_url, run_dir, 0) as runtime:
        shards = _shards_of(runtime)
        shards.holds = lambda shard: held_again
        reset = await _reset_of_a_call_in_flight(runtime, shards)
    assert reason in str(reset)
    assert isinstance(reset.__cause__, td.ObjectUnavailableError), "not the object's fault"


async def test_the_runtime_tells_its_shards_when_the_storage_is_out_of_reach(
    postgres_url: str, run_dir: str
) -> None:
    async with _member(postgres_url, run_dir, 0) as runtime:
        assert runtime.cluster is not None
        shards = _shards_of(runtime)
        assert shards.storage_unreachable() is None
        away = td.StorageError("the database is unreachable")
        runtime.cluster.round_error = away
        assert shards.storage_unreachable() is away, "a reset now says the storage was away"


async def test_a_member_gets_its_shards_sooner_than_a_round_interval(
    postgres_url: str, run_dir: str
) -> None:
    """The runtime listens for lease hints: the holder hands over at once, not at its next round."""
    slow = 60.0  # rounds every 15 s: without a hint, b would wait for a's next one
    async with _member(postgres_url, run_dir, 0, slow) as a:
        with trio.fail_after(10):
            while len(_held(a)) < 256:
                await trio.sleep(0.05)
        async with _member(postgres_url, run_dir, 1, slow) as b:
            with trio.fail_after(10):  # well within the 15 s between a's rounds
                while not _held(b):
                    await trio.sleep(0.05)
            assert len(_held(a) | _held(b)) == 256
