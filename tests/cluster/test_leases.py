"""Placement (rendezvous over slots) and shard leases with epochs, on a real SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from trio_durable._cluster._leases import ShardLease, SqliteLeaseStore, plan_round
from trio_durable._cluster._placement import Member, desired_owners
from trio_durable._ids import SHARD_COUNT, shard_of

LEASE = 4.0


def test_shard_of_uses_the_first_byte_of_the_id() -> None:
    assert shard_of("00" + "f" * 62) == 0
    assert shard_of("ff" + "0" * 62) == 255
    assert shard_of("7a" + "0" * 62) == 0x7A


def test_every_shard_gets_one_owner_and_the_load_is_spread() -> None:
    members = [Member(f"m{slot}", slot, "", started=1.0) for slot in range(4)]
    owners = desired_owners(members)
    assert len(owners) == SHARD_COUNT and None not in owners
    counts = {m.member_id: owners.count(m.member_id) for m in members}
    assert all(40 <= count <= 90 for count in counts.values()), counts


def test_a_restarted_worker_in_the_same_slot_gets_the_same_shards_back() -> None:
    before = desired_owners([Member("a", 0, "", 1.0), Member("b", 1, "", 1.0)])
    after = desired_owners([Member("a", 0, "", 1.0), Member("b2", 1, "", 9.0)])
    assert [o == "b" for o in before] == [o == "b2" for o in after], "slot 1's shards went back"


def test_removing_a_worker_moves_only_its_shards() -> None:
    three = desired_owners([Member(f"m{s}", s, "", 1.0) for s in range(3)])
    two = desired_owners([Member(f"m{s}", s, "", 1.0) for s in range(2)])
    moved = [shard for shard in range(SHARD_COUNT) if three[shard] != two[shard]]
    assert all(three[shard] == "m2" for shard in moved), "only m2's shards moved"


def test_the_newest_member_of_a_slot_is_preferred() -> None:
    owners = desired_owners([Member("old", 0, "", 1.0), Member("new", 0, "", 2.0)])
    assert set(owners) == {"new"}


def _leases(owner: str | None, expires: float = 100.0) -> list[ShardLease]:
    return [ShardLease(shard, owner, 1, expires) for shard in range(SHARD_COUNT)]


def test_plan_takes_free_shards() -> None:
    plan = plan_round("a", 10.0, [Member("a", 0, "", 1.0)], _leases(None, 0.0))
    assert plan.take == frozenset(range(SHARD_COUNT)) and not plan.renew and not plan.hand_over


def test_plan_leaves_a_live_owners_unexpired_shards_alone() -> None:
    live = [Member("a", 0, "", 1.0), Member("b", 1, "", 1.0)]
    plan = plan_round("b", 10.0, live, _leases("a", expires=20.0))
    assert plan.take == frozenset(), "a holds valid leases: b waits for a to hand them over"


def test_plan_takes_expired_shards_and_those_of_a_dead_member() -> None:
    live = [Member("b", 1, "", 1.0)]
    assert plan_round("b", 30.0, live, _leases("a", expires=20.0)).take == frozenset(
        range(SHARD_COUNT)
    ), "expired"
    assert plan_round("b", 10.0, live, _leases("a", expires=20.0)).take == frozenset(
        range(SHARD_COUNT)
    ), "a is not among the live members"


def test_plan_hands_over_what_another_member_should_own() -> None:
    live = [Member("a", 0, "", 1.0), Member("b", 1, "", 1.0)]
    plan = plan_round("a", 10.0, live, _leases("a"))
    wanted_by_b = {s for s, o in enumerate(desired_owners(live)) if o == "b"}
    assert plan.hand_over == wanted_by_b and plan.renew.isdisjoint(wanted_by_b)


@pytest.fixture
async def store(tmp_path: Path) -> SqliteLeaseStore:
    store = SqliteLeaseStore(tmp_path / "db.sqlite3")
    await store.setup()
    return store


async def test_first_member_takes_every_shard_at_epoch_one(store: SqliteLeaseStore) -> None:
    state = await store.round(Member("a", 0, "addr-a", 1.0), LEASE)
    assert state.held == dict.fromkeys(range(SHARD_COUNT), 1)
    assert set(state.owners) == {"a"} and set(state.members) == {"a"}


async def test_shards_move_to_a_new_member_only_after_release_with_a_new_epoch(
    store: SqliteLeaseStore,
) -> None:
    a, b = Member("a", 0, "addr-a", 1.0), Member("b", 1, "addr-b", 1.0)
    await store.round(a, LEASE)
    joined = await store.round(b, LEASE)
    assert joined.held == {}, "b cannot take shards a still holds"
    a_state = await store.round(a, LEASE)
    assert a_state.hand_over, "a learns which shards b should own"
    await store.release("a", a_state.hand_over)
    b_state = await store.round(b, LEASE)
    assert set(b_state.held) == set(a_state.hand_over)
    assert set(b_state.held.values()) == {2}, "taking a shard increments its epoch"
    assert set((await store.round(a, LEASE)).held) == set(range(SHARD_COUNT)) - set(b_state.held)


async def test_a_revoked_members_shards_are_taken_at_once(store: SqliteLeaseStore) -> None:
    a, b = Member("a", 0, "addr-a", 1.0), Member("b", 1, "addr-b", 1.0)
    await store.round(a, LEASE)
    await store.round(b, LEASE)
    await store.revoke("a")
    state = await store.round(b, LEASE)
    assert set(state.held) == set(range(SHARD_COUNT)), "b took everything"
    assert "a" not in state.members


async def test_setup_is_idempotent_when_members_start_at_once(tmp_path: Path) -> None:
    stores = [SqliteLeaseStore(tmp_path / "db.sqlite3") for _ in range(4)]
    async with trio.open_nursery() as nursery:
        for store in stores:
            nursery.start_soon(store.setup)
    state = await stores[0].round(Member("a", 0, "", 1.0), LEASE)
    assert len(state.owners) == SHARD_COUNT
    for store in stores:
        await store.aclose()
