"""Commits are fenced by epoch: a process that lost a shard can never commit for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from trio_durable._cluster._leases import SqliteLeaseStore
from trio_durable._cluster._placement import Member
from trio_durable._ids import SHARD_COUNT
from trio_durable._storage._backend import Fence, ObjectWrite
from trio_durable._storage._sqlite import DATABASE_NAME, SqliteBackend

LEASE = 4.0


def _write(shard: int, key: str, value: bytes) -> ObjectWrite:
    hex_id = f"{shard:02x}" + "0" * 62
    return ObjectWrite("things", hex_id, None, puts={key: value})


async def _read(backend: SqliteBackend, shard: int, key: str) -> bytes | None:
    found = await backend.read("things", f"{shard:02x}" + "0" * 62, [key])
    return found.get(key)


@pytest.fixture
async def setup(tmp_path: Path) -> tuple[SqliteBackend, SqliteLeaseStore]:
    backend = SqliteBackend(tmp_path, commit_in_thread=False)
    await backend.open()
    store = SqliteLeaseStore(tmp_path / DATABASE_NAME)
    await store.setup()
    return backend, store


async def test_a_holder_commits_under_its_fence(
    setup: tuple[SqliteBackend, SqliteLeaseStore],
) -> None:
    backend, store = setup
    state = await store.round(Member("a", 0, "", 1.0), LEASE)
    refused = await backend.commit([_write(7, "k", b"v")], Fence("a", state.held))
    assert refused == frozenset()
    assert await _read(backend, 7, "k") == b"v"
    await store.aclose()
    await backend.aclose()


async def test_a_lost_shard_refuses_its_writes_and_keeps_the_others(
    setup: tuple[SqliteBackend, SqliteLeaseStore],
) -> None:
    backend, store = setup
    a_state = await store.round(Member("a", 0, "", 1.0), LEASE)
    stale = Fence("a", dict(a_state.held))  # what a paused "a" still believes
    await store.revoke("a")
    b_state = await store.round(Member("b", 1, "", 1.0), LEASE)
    assert set(b_state.held) == set(range(SHARD_COUNT)), "b took every shard"
    refused = await backend.commit(
        [_write(7, "k", b"from a, too late"), _write(9, "k", b"also too late")], stale
    )
    assert refused == {7, 9}
    assert await _read(backend, 7, "k") is None, "nothing of the stale writer reached the disk"
    assert await backend.commit([_write(7, "k", b"from b")], Fence("b", b_state.held)) == set()
    assert await _read(backend, 7, "k") == b"from b"
    await store.aclose()
    await backend.aclose()


async def test_a_shard_taken_again_at_a_new_epoch_refuses_the_old_epoch(
    setup: tuple[SqliteBackend, SqliteLeaseStore],
) -> None:
    backend, store = setup
    first = await store.round(Member("a", 0, "", 1.0), LEASE)
    await store.revoke("a")
    await store.round(Member("b", 1, "", 1.0), LEASE)  # b holds it for a while...
    await store.leave("b")
    again = await store.round(Member("a", 0, "", 1.0), LEASE)  # ...then a again
    assert again.held[3] == first.held[3] + 2
    refused = await backend.commit([_write(3, "k", b"old epoch")], Fence("a", first.held))
    assert refused == {3}, "same member, older epoch: refused"
    await store.aclose()
    await backend.aclose()


async def test_without_a_fence_nothing_is_checked(tmp_path: Path) -> None:
    backend = SqliteBackend(tmp_path, commit_in_thread=False)
    await backend.open()
    assert await backend.commit([_write(1, "k", b"v")]) == frozenset()
    assert await _read(backend, 1, "k") == b"v"
    await backend.aclose()


async def test_sql_commits_run_only_for_writes_the_fence_still_holds(
    setup: tuple[SqliteBackend, SqliteLeaseStore],
) -> None:
    backend, store = setup
    a_state = await store.round(Member("a", 0, "", 1.0), LEASE)
    stale = Fence("a", dict(a_state.held))
    await store.revoke("a")
    await store.round(Member("b", 1, "", 1.0), LEASE)
    asked: list[str] = []

    def commit_sql(write: ObjectWrite) -> bool:
        asked.append(write.hex_id)
        return True

    refused = backend.commit_with_sql([_write(7, "k", b"too late")], stale, commit_sql)
    assert refused == {7}
    assert asked == [], "the SQL file of an object whose shard moved is never committed"
    assert await _read(backend, 7, "k") is None
    await store.aclose()
    await backend.aclose()


async def test_a_failed_sql_commit_leaves_out_that_object_only(
    setup: tuple[SqliteBackend, SqliteLeaseStore],
) -> None:
    backend, store = setup
    state = await store.round(Member("a", 0, "", 1.0), LEASE)
    writes = [_write(7, "k", b"sql failed"), _write(9, "k", b"fine")]
    refused = backend.commit_with_sql(
        writes, Fence("a", state.held), lambda write: write.hex_id.startswith("09")
    )
    assert refused == frozenset()
    assert await _read(backend, 7, "k") is None, "its key-value writes are left out too"
    assert await _read(backend, 9, "k") == b"fine"
    await store.aclose()
    await backend.aclose()
