"""Shard leases on PostgreSQL: ``tests/cluster/test_leases.py``'s store tests, and races.

The lease tests written for ``SqliteLeaseStore`` run here against
``PgLeaseStore`` (same tables, same :func:`plan_round`), then rounds of
several members at once, each in its own session.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

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
