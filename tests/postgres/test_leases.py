"""Shard leases on PostgreSQL: ``tests/cluster/test_leases.py``'s store tests, and races.

The lease tests written for ``SqliteLeaseStore`` run here against
``PgLeaseStore`` (same tables, same :func:`plan_round`), then rounds of
several members at once, each in its own session.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import psycopg
import pytest
import trio

from trio_durable._cluster._pg_leases import PgLeaseStore
from trio_durable._cluster._placement import Member
from trio_durable._ids import SHARD_COUNT

from ..cluster.test_leases import (
    test_a_revoked_members_shards_are_taken_at_once,
    test_first_member_takes_every_shard_at_epoch_one,
    test_shards_move_to_a_new_member_only_after_release_with_a_new_epoch,
)
from .helpers import waiting_on_a_lock
from .server import PostgresServer

__all__ = [
    "test_a_revoked_members_shards_are_taken_at_once",
    "test_first_member_takes_every_shard_at_epoch_one",
    "test_shards_move_to_a_new_member_only_after_release_with_a_new_epoch",
]

LEASE = 4.0


@pytest.fixture
async def store(postgres_url: str) -> AsyncIterator[PgLeaseStore]:
    store = PgLeaseStore(postgres_url)
    await store.setup()
    yield store
    await store.aclose()


async def test_setup_is_idempotent_when_members_start_at_once(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.create_database("leases")  # never migrated before
    stores = [PgLeaseStore(url) for _ in range(4)]
    async with trio.open_nursery() as nursery:
        for store in stores:
            nursery.start_soon(store.setup)
    state = await stores[0].round(Member("a", 0, "", 1.0), LEASE)
    assert len(state.owners) == SHARD_COUNT, "one row per shard, not four"
    assert set(state.held.values()) == {1}, "every shard taken once, at epoch 1"
    for store in stores:
        await store.aclose()


async def test_rounds_of_members_at_once_share_the_shards_out(postgres_url: str) -> None:
    members = [Member(f"m{slot}", slot, f"addr-{slot}", 1.0) for slot in range(4)]
    stores = [PgLeaseStore(postgres_url) for _ in members]
    await stores[0].setup()
    epochs: dict[tuple[int, int], set[str]] = {}

    async def one_round(store: PgLeaseStore, member: Member) -> None:
        state = await store.round(member, LEASE)
        for shard, epoch in state.held.items():
            epochs.setdefault((shard, epoch), set()).add(member.member_id)
        if state.hand_over:
            await store.release(member.member_id, state.hand_over)

    for _ in range(4):  # join, learn of the others, hand over, take: all at once
        async with trio.open_nursery() as nursery:
            for store, member in zip(stores, members, strict=True):
                nursery.start_soon(one_round, store, member)
    finals = [
        await store.round(member, LEASE) for store, member in zip(stores, members, strict=True)
    ]
    shared = {key: holders for key, holders in epochs.items() if len(holders) > 1}
    assert shared == {}, "an epoch of a shard belongs to one member only"
    held = [shard for state in finals for shard in state.held]
    assert sorted(held) == list(range(SHARD_COUNT)), "each shard held by exactly one member"
    assert all(state.held for state in finals), "every member got some shards"
    for store in stores:
        await store.aclose()


async def test_a_release_waits_its_turn_instead_of_deadlocking_with_a_commit(
    postgres_url: str,
) -> None:
    """A commit locks its shard rows in shard order; a release must not lock them otherwise.

    An UPDATE alone locks rows in the order its plan visits them: in the
    table's physical order when the planner prefers a bitmap or sequential
    scan (as it may once the table has grown), as this session is made to.
    """
    store = PgLeaseStore(f"{postgres_url}?options=-c%20enable_indexscan%3Doff")
    await store.setup()
    await store.round(Member("a", 0, "", 1.0), LEASE)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        # The rows in the table in descending order (as updates scatter them):
        # a scan in physical order locks row 2 before row 1.
        conn.execute("CREATE INDEX shards_descending ON _td_shards (shard DESC)")
        conn.execute("CLUSTER _td_shards USING shards_descending")
    commit = psycopg.connect(postgres_url)  # as a commit of shards 1 and 2 does, in order
    try:
        commit.execute("SELECT shard FROM _td_shards WHERE shard = 1 FOR SHARE")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.release, "a", [1, 2])
            await waiting_on_a_lock(postgres_url)  # the release waits for row 1
            await trio.to_thread.run_sync(
                commit.execute, "SELECT shard FROM _td_shards WHERE shard = 2 FOR SHARE"
            )
            await trio.to_thread.run_sync(commit.commit)
    finally:
        commit.close()
        await store.aclose()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        owners = conn.execute("SELECT owner FROM _td_shards WHERE shard IN (1, 2)").fetchall()
    assert owners == [(None,), (None,)], "the release went through once the commit ended"
