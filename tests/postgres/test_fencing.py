"""Fenced commits on PostgreSQL: ``tests/cluster/test_fencing.py`` on a real server, and races.

The fence check reads the shard rows ``FOR SHARE`` in the commit's own
transaction; a lease round locks them ``FOR UPDATE``. So a commit that runs
while a round moves its shard waits for the round and then sees the new
epoch: it can never commit under an epoch that is already gone.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator

import psycopg
import pytest
import trio

from trio_durable._cluster._pg_leases import PgLeaseStore
from trio_durable._cluster._placement import Member
from trio_durable._storage._backend import Fence, ObjectWrite
from trio_durable._storage._postgres import PostgresBackend

from ..cluster.test_fencing import (
    test_a_holder_commits_under_its_fence,
    test_a_lost_shard_refuses_its_writes_and_keeps_the_others,
    test_a_shard_taken_again_at_a_new_epoch_refuses_the_old_epoch,
)
from .helpers import waiting_on_a_lock

__all__ = [
    "test_a_holder_commits_under_its_fence",
    "test_a_lost_shard_refuses_its_writes_and_keeps_the_others",
    "test_a_shard_taken_again_at_a_new_epoch_refuses_the_old_epoch",
]

LEASE = 4.0


def _write(shard: int, key: str, value: bytes) -> ObjectWrite:
    return ObjectWrite("things", f"{shard:02x}" + "0" * 62, None, puts={key: value})


@pytest.fixture
async def setup(postgres_url: str) -> AsyncIterator[tuple[PostgresBackend, PgLeaseStore]]:
    # Cluster nodes share the database (exclusive=False) and fence every commit.
    backend = PostgresBackend(postgres_url, exclusive=False)
    await backend.open()
    store = PgLeaseStore(postgres_url)
    await store.setup()
    yield backend, store
    await store.aclose()
    await backend.aclose()


async def test_without_a_fence_nothing_is_checked(postgres_url: str) -> None:
    backend = PostgresBackend(postgres_url)
    await backend.open()
    assert await backend.commit([_write(1, "k", b"v")]) == frozenset()
    found = await backend.read("things", "01" + "0" * 62, ["k"])
    assert found == {"k": b"v"}, "an unfenced commit of the database's one runtime is applied"
    await backend.aclose()


async def test_a_commit_waiting_on_a_round_sees_the_epoch_it_set(
    setup: tuple[PostgresBackend, PgLeaseStore], postgres_url: str
) -> None:
    backend, store = setup
    a_state = await store.round(Member("a", 0, "", 1.0), LEASE)
    fence = Fence("a", dict(a_state.held))
    # Another session plays a lease round in progress: it holds shard 7's row
    # FOR UPDATE and is about to give it to "b" at a new epoch.
    round_conn = psycopg.connect(postgres_url)
    round_conn.execute("SELECT * FROM _td_shards WHERE shard = 7 FOR UPDATE")
    outcome: list[frozenset[int]] = []

    async def commit() -> None:
        outcome.append(await backend.commit([_write(7, "k", b"from a")], fence))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(commit)
        await waiting_on_a_lock(postgres_url)
        assert outcome == [], "the commit waits for the round that holds the shard's row"
        await trio.to_thread.run_sync(_give_shard_to_b, round_conn)
    assert outcome == [frozenset({7})], "after the round, the old epoch is refused"
    found = await backend.read("things", "07" + "0" * 62, ["k"])
    assert found == {}, "nothing of the stale commit reached the database"


def _give_shard_to_b(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    conn.execute("UPDATE _td_shards SET owner = 'b', epoch = epoch + 1 WHERE shard = 7")
    conn.commit()
    conn.close()


async def test_a_round_waits_for_a_commit_holding_the_shard(
    setup: tuple[PostgresBackend, PgLeaseStore], postgres_url: str
) -> None:
    _backend, store = setup
    await store.round(Member("a", 0, "", 1.0), LEASE)
    await store.revoke("a")
    # Another session plays a commit in progress: it read shard 3 FOR SHARE.
    commit_conn = psycopg.connect(postgres_url)
    commit_conn.execute("SELECT * FROM _td_shards WHERE shard = 3 FOR SHARE")
    finished = threading.Event()

    async def round_of_b() -> None:
        await store.round(Member("b", 1, "", 1.0), LEASE)
        finished.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(round_of_b)
        await waiting_on_a_lock(postgres_url)
        assert not finished.is_set(), "the round waits for the commit that read the shard"
        await trio.to_thread.run_sync(commit_conn.commit)
    assert finished.is_set(), "once the commit ended, the round ran"
    commit_conn.close()
