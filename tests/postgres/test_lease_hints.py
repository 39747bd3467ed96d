"""LISTEN/NOTIFY as a wake-up hint for lease rounds, with polling as the fallback.

Members here are real :class:`ClusterMember` objects on a real database,
each with :meth:`PgLeaseStore.watch` asking for a round on every
notification (as a node's runtime does). Leases are long, so that a change
noticed only by polling would take seconds: the hints must make it quicker.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest
import trio

from trio_durable._cluster._member import ClusterMember, ClusterSpec
from trio_durable._cluster._pg_leases import PgLeaseStore
from trio_durable._ids import SHARD_COUNT

from ..cluster.test_members import NoShardEvents

pytestmark = pytest.mark.slow

#: Rounds every 10 s: polling alone takes up to that long to notice a change.
LONG_LEASE = 40.0
INTERVAL = LONG_LEASE / 4
HINTS = "trio_durable lease hints"


@pytest.fixture
def run_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="td-")  # short: AF_UNIX paths are limited
    yield path
    shutil.rmtree(path, ignore_errors=True)


@asynccontextmanager
async def running_member(
    url: str, run_dir: str, slot: int, lease: float, *, hints: bool = True, retry: float = 0.2
) -> AsyncIterator[ClusterMember]:
    """A member keeping its leases, with a watch that asks for a round on each hint."""
    store = PgLeaseStore(url)
    spec = ClusterSpec(slot=slot, run_dir=run_dir, lease_seconds=lease)
    member = ClusterMember(spec, store, b"k" * 32, NoShardEvents())
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(member.run)
            if hints:
                await nursery.start(
                    functools.partial(store.watch, member.request_round, retry_seconds=retry)
                )
            yield member
            nursery.cancel_scope.cancel()
    finally:
        await store.aclose()


def _listeners(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = %s",
            (HINTS,),
        ).fetchone()
    return int(row[0]) if row is not None else 0


def _end_listeners(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = %s",
            (HINTS,),
        )


async def _until(condition: Any, within: float) -> float:
    """Seconds until ``condition()`` holds (checked every 20 ms), failing after ``within``."""
    start = trio.current_time()
    with trio.fail_after(within):
        while not condition():
            await trio.sleep(0.02)
    return trio.current_time() - start


async def test_a_newcomer_gets_its_shards_sooner_than_a_round_interval(
    postgres_url: str, run_dir: str
) -> None:
    async with running_member(postgres_url, run_dir, 0, LONG_LEASE) as first:
        assert len(first.held_shards()) == SHARD_COUNT
        await first.wait_for_round()  # its next round by the clock is 10 s away
        async with running_member(postgres_url, run_dir, 1, LONG_LEASE) as second:
            # The newcomer's first round wakes the first member, which hands
            # shards over and releases them; the release wakes the newcomer.
            took = await _until(lambda: len(second.held_shards()) > 0, within=3 * INTERVAL)
            assert len(first.held_shards()) + len(second.held_shards()) == SHARD_COUNT
    assert took < INTERVAL / 2, f"the released shards were taken after {took:.1f} s"


async def test_without_its_listening_connection_a_member_still_polls(
    postgres_url: str, run_dir: str
) -> None:
    lease = 4.0  # rounds every second
    async with running_member(postgres_url, run_dir, 0, lease, retry=60) as first:
        async with running_member(postgres_url, run_dir, 1, lease, retry=60) as second:
            await _until(lambda: len(second.held_shards()) > 0, within=10)
            await trio.to_thread.run_sync(_end_listeners, postgres_url)
            assert await trio.to_thread.run_sync(_listeners, postgres_url) == 0
            rounds = first.rounds
        # The second member left (its release notified nobody): the first
        # takes its shards by polling.
        took = await _until(lambda: len(first.held_shards()) == SHARD_COUNT, within=4 * lease)
        assert first.rounds > rounds, "the member kept its rounds"
        assert await trio.to_thread.run_sync(_listeners, postgres_url) == 0, "no hint came"
    assert took < 2 * lease


async def test_a_lost_listening_connection_is_made_again(postgres_url: str, run_dir: str) -> None:
    async with running_member(postgres_url, run_dir, 0, LONG_LEASE, retry=0.2) as member:
        await trio.to_thread.run_sync(_end_listeners, postgres_url)

        async def listening() -> bool:
            return await trio.to_thread.run_sync(_listeners, postgres_url) == 1

        with trio.fail_after(10):
            while not await listening():
                await trio.sleep(0.05)
        await member.wait_for_round()
        rounds = member.rounds
        other = PgLeaseStore(postgres_url)
        await other.release("nobody", [])  # a release of nothing still notifies
        await other.aclose()
        woke = await _until(lambda: member.rounds > rounds, within=INTERVAL)
    assert woke < INTERVAL / 2, f"the hint woke the member after {woke:.1f} s"
