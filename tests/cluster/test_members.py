"""Two members of one cluster in one process: each object runs in exactly one of them.

The members share a data directory (its lock passed as a descriptor, as a
supervisor passes it to its workers) and talk over real Unix sockets. Time
is real: leases are renewed every quarter of a second.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Collection, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

import trio_durable as td
from trio_durable._cluster import _member
from trio_durable._cluster._leases import SqliteLeaseStore
from trio_durable._cluster._member import ClusterMember, ClusterSpec
from trio_durable._ids import shard_of
from trio_durable._storage._lock import DataDirLock

LEASE = 1.0


class Refused(Exception):
    pass


@attrs.frozen
class Note:
    text: str
    tags: tuple[str, ...] = ()


@attrs.define(eq=False)
class Counter(td.DurableObject):
    hits: int = 0  # in memory: a second live instance would start again at 0

    async def increment(self) -> int:
        self.hits += 1
        stored = (await self.ctx.storage.get("hits") or 0) + 1
        await self.ctx.storage.put("hits", stored)
        return self.hits

    async def stored(self) -> int:
        return int(await self.ctx.storage.get("hits") or 0)

    async def fail(self, kind: str) -> None:
        if kind == "key":
            raise KeyError("no such thing")
        raise Refused("refused on purpose")

    async def slow(self) -> str:
        await trio.sleep(30)
        return "finished"

    async def nap(self, seconds: float) -> str:
        await trio.sleep(seconds)
        return "rested"

    async def echo_note(self, note: Note) -> Note:
        return attrs.evolve(note, tags=(*note.tags, "seen"))

    async def ask(self, other: td.Stub) -> int:
        return int(await other.increment())

    async def where(self) -> int:
        return os.getpid()


@attrs.define(eq=False)
class Ledger(td.DurableObject):
    """Rows in the object's SQL database, and a count in its key-value storage."""

    def __attrs_post_init__(self) -> None:
        self.ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS entries (amount INTEGER)")

    async def add(self, amount: int) -> None:
        self.ctx.storage.sql.exec("INSERT INTO entries (amount) VALUES (?)", amount)
        await self.ctx.storage.put("count", int(await self.ctx.storage.get("count") or 0) + 1)

    async def add_then_transact(self, amount: int) -> None:
        """An INSERT, then a transaction block with SQL in it: the INSERT is committed first."""
        self.ctx.storage.sql.exec("INSERT INTO entries (amount) VALUES (?)", amount)
        async with self.ctx.storage.transaction() as txn:
            self.ctx.storage.sql.exec("INSERT INTO entries (amount) VALUES (?)", amount + 1)
            await txn.put("count", int(await txn.get("count") or 0) + 1)

    async def entries(self) -> list[int]:
        return [row["amount"] for row in self.ctx.storage.sql.exec("SELECT amount FROM entries")]

    async def count(self) -> int:
        return int(await self.ctx.storage.get("count") or 0)


OBJECTS = {"counters": Counter, "ledgers": Ledger}


@pytest.fixture
def run_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="td-")  # short: AF_UNIX paths are limited
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def pair(tmp_path: Path, run_dir: str) -> AsyncIterator[tuple[td.Runtime, td.Runtime]]:
    lock = DataDirLock.acquire(tmp_path)
    try:
        async with AsyncExitStack() as stack:
            runtimes = []
            for slot in (0, 1):
                backend = td.SqliteBackend(tmp_path, lock_fd=os.dup(lock.fd))
                runtimes.append(
                    await stack.enter_async_context(
                        td.open_runtime(
                            OBJECTS,
                            backend=backend,
                            cluster=ClusterSpec(slot=slot, run_dir=run_dir, lease_seconds=LEASE),
                        )
                    )
                )
            a, b = runtimes
            with trio.fail_after(20):
                while not (_held(a) and _held(b) and len(_held(a) | _held(b)) == 256):
                    await trio.sleep(0.05)
            yield a, b
    finally:
        lock.release()


def _held(runtime: td.Runtime) -> frozenset[int]:
    assert runtime.cluster is not None
    return runtime.cluster.held_shards()


def _owned_by(runtime: td.Runtime, count: int = 1) -> list[str]:
    """Names of objects whose shard ``runtime`` holds."""
    names, n = [], 0
    counters = runtime.namespace("counters")
    while len(names) < count:
        name = f"obj-{n}"
        n += 1
        if shard_of(counters.id_from_name(name).hex) in _held(runtime):
            names.append(name)
    return names


async def test_the_shards_are_split_between_the_members(
    pair: tuple[td.Runtime, td.Runtime],
) -> None:
    a, b = pair
    assert _held(a).isdisjoint(_held(b)), "no shard is held twice"
    assert 80 <= len(_held(a)) <= 176 and 80 <= len(_held(b)) <= 176, (len(_held(a)), len(_held(b)))


async def test_calls_through_both_members_reach_one_instance(
    pair: tuple[td.Runtime, td.Runtime],
) -> None:
    a, b = pair
    [name] = _owned_by(b)
    via_a, via_b = (
        a.namespace("counters").get_by_name(name),
        b.namespace("counters").get_by_name(name),
    )
    results = []
    for n in range(10):
        results.append(await (via_a if n % 2 == 0 else via_b).increment())
    assert results == list(range(1, 11)), "one live instance: its in-memory count never restarts"
    assert await via_a.stored() == 10
    assert a.statistics().live_objects == 0 and b.statistics().live_objects == 1


async def test_concurrent_increments_through_both_members_count_exactly(
    pair: tuple[td.Runtime, td.Runtime],
) -> None:
    a, b = pair
    name = _owned_by(a)[0]
    stubs = [rt.namespace("counters").get_by_name(name) for rt in (a, b)]

    async def hammer(stub: Any) -> None:
        for _ in range(25):
            await stub.increment()

    async with trio.open_nursery() as nursery:
        for stub in stubs * 2:
            nursery.start_soon(hammer, stub)
    assert await stubs[1].stored() == 100, "no lost update, no duplicate"


async def test_an_exception_crosses_with_its_type(pair: tuple[td.Runtime, td.Runtime]) -> None:
    a, b = pair
    [name] = _owned_by(b)
    stub = a.namespace("counters").get_by_name(name)
    with pytest.raises(KeyError, match="no such thing"):
        await stub.fail("key")
    with pytest.raises(Refused, match="refused on purpose") as caught:
        await stub.fail("app")
    assert "raised in another process" in "".join(getattr(caught.value, "__notes__", []))


async def test_records_keep_their_class_and_arrive_as_copies(
    pair: tuple[td.Runtime, td.Runtime],
) -> None:
    a, b = pair
    [name] = _owned_by(b)
    note = Note("hello", ("a",))
    back = await a.namespace("counters").get_by_name(name).echo_note(note)
    assert back == Note("hello", ("a", "seen")) and type(back) is Note


async def test_a_stub_argument_reaches_its_object_from_the_other_member(
    pair: tuple[td.Runtime, td.Runtime],
) -> None:
    a, b = pair
    [on_a] = _owned_by(a)
    [on_b] = _owned_by(b)
    asker = a.namespace("counters").get_by_name(on_b)  # runs in b
    target = a.namespace("counters").get_by_name(on_a)  # lives in a
    assert await asker.ask(target) == 1
    assert await target.stored() == 1


async def test_cancelling_a_remote_call_cancels_it_at_the_owner(
    pair: tuple[td.Runtime, td.Runtime],
) -> None:
    a, b = pair
    [name] = _owned_by(b)
    stub = a.namespace("counters").get_by_name(name)
    with trio.move_on_after(0.5):
        await stub.slow()
    record = b.registry.lookup("counters", stub.id.hex)
    assert record is not None, "the call ran at the owner, b"
    with trio.fail_after(5):  # the handler was cancelled there, not left running for 30 s
        while record.busy:
            await trio.sleep(0.02)


async def test_values_that_are_not_data_are_refused_before_sending(
    pair: tuple[td.Runtime, td.Runtime],
) -> None:
    a, b = pair
    [name] = _owned_by(b)
    with pytest.raises(TypeError, match=r"args\[0\] is a function"):
        await a.namespace("counters").get_by_name(name).echo_note(lambda: None)
    assert b.statistics().activations == 0, "nothing reached the owner"


async def test_a_member_that_leaves_hands_its_shards_to_the_other(
    tmp_path: Path, run_dir: str
) -> None:
    lock = DataDirLock.acquire(tmp_path)
    try:
        cluster = lambda slot: ClusterSpec(slot=slot, run_dir=run_dir, lease_seconds=LEASE)  # noqa: E731
        async with td.open_runtime(
            OBJECTS, backend=td.SqliteBackend(tmp_path, lock_fd=os.dup(lock.fd)), cluster=cluster(0)
        ) as a:
            async with td.open_runtime(
                OBJECTS,
                backend=td.SqliteBackend(tmp_path, lock_fd=os.dup(lock.fd)),
                cluster=cluster(1),
            ) as b:
                with trio.fail_after(20):
                    while not _held(b):
                        await trio.sleep(0.05)
                [name] = _owned_by(b)
                stub = a.namespace("counters").get_by_name(name)
                assert await stub.increment() == 1
            # b left: its shards come back to a within a lease round or two.
            with trio.fail_after(10):
                while len(_held(a)) < 256:
                    await trio.sleep(0.05)
            assert await stub.stored() == 1, "the write made in b is there"
            assert await stub.increment() == 1, "a fresh instance in a"
    finally:
        lock.release()


@asynccontextmanager
async def members_with_slow_rounds(
    tmp_path: Path, run_dir: str
) -> AsyncIterator[tuple[td.Runtime, td.Runtime]]:
    """Two members whose rounds are 15 s apart: a stale one will not notice in time."""
    lock = DataDirLock.acquire(tmp_path)
    slow = 60.0
    try:
        async with AsyncExitStack() as stack:
            a, b = [
                await stack.enter_async_context(
                    td.open_runtime(
                        OBJECTS,
                        backend=td.SqliteBackend(tmp_path, lock_fd=os.dup(lock.fd)),
                        cluster=ClusterSpec(slot=slot, run_dir=run_dir, lease_seconds=slow),
                    )
                )
                for slot in (0, 1)
            ]
            yield a, b
    finally:
        lock.release()


async def revoke_behind_its_back(tmp_path: Path, a: td.Runtime, b: td.Runtime) -> None:
    """The supervisor decides ``a`` is dead and ``b`` takes its shards (a new epoch); ``a``
    still believes it holds them."""
    assert a.cluster is not None and b.cluster is not None
    store = SqliteLeaseStore(tmp_path / "trio_durable.sqlite3")
    await store.revoke(a.cluster.member.member_id)
    await store.aclose()
    await b.cluster.wait_for_round()


def _ledger_owned_by(runtime: td.Runtime) -> str:
    held = _held(runtime)
    ledgers = runtime.namespace("ledgers")
    return next(
        f"ledger-{n}"
        for n in range(10_000)
        if shard_of(ledgers.id_from_name(f"ledger-{n}").hex) in held
    )


async def test_a_member_that_lost_its_shard_unknowingly_cannot_commit_for_it(
    tmp_path: Path, run_dir: str
) -> None:
    """The fence, not the lease round: the stale member still believes it holds the shard."""
    async with members_with_slow_rounds(tmp_path, run_dir) as (a, b):
        [name] = _owned_by(a)
        via_a = a.namespace("counters").get_by_name(name)
        assert await via_a.increment() == 1
        await revoke_behind_its_back(tmp_path, a, b)
        assert shard_of(via_a.id.hex) in _held(b)
        assert shard_of(via_a.id.hex) in _held(a), "a has not noticed: it still runs the object"
        with pytest.raises(td.ObjectResetError):
            await via_a.increment()  # runs in a, whose commit is fenced off
        via_b = b.namespace("counters").get_by_name(name)
        assert await via_b.stored() == 1, "the stale member's write never reached the disk"


async def test_a_member_that_lost_its_shard_unknowingly_cannot_commit_sql_for_it(
    tmp_path: Path, run_dir: str
) -> None:
    """The fence covers the object's SQL database too, not only its key-value writes."""
    async with members_with_slow_rounds(tmp_path, run_dir) as (a, b):
        name = _ledger_owned_by(a)
        via_a = a.namespace("ledgers").get_by_name(name)
        await via_a.add(1)
        await revoke_behind_its_back(tmp_path, a, b)
        assert shard_of(via_a.id.hex) in _held(b)
        assert shard_of(via_a.id.hex) in _held(a), "a has not noticed: it still runs the object"
        with pytest.raises(td.ObjectResetError):
            await via_a.add(2)  # an INSERT and a put, in a, whose commit is fenced off
        via_b = b.namespace("ledgers").get_by_name(name)
        assert await via_b.count() == 1, "the stale member's put never reached the disk"
        assert await via_b.entries() == [1], "nor did its INSERT"


async def test_sql_committed_ahead_of_a_transaction_block_is_fenced_too(
    tmp_path: Path, run_dir: str
) -> None:
    """Statements pending when a transaction block begins are committed early, under the fence."""
    async with members_with_slow_rounds(tmp_path, run_dir) as (a, b):
        name = _ledger_owned_by(a)
        via_a = a.namespace("ledgers").get_by_name(name)
        await via_a.add_then_transact(10)
        assert await via_a.entries() == [10, 11], "unfenced, both INSERTs are committed"
        await revoke_behind_its_back(tmp_path, a, b)
        assert shard_of(via_a.id.hex) in _held(a), "a has not noticed: it still runs the object"
        # In a, whose early commit is fenced off: the block's first
        # statement raises, and the object is reset.
        with pytest.raises(td.StorageError, match="no longer holds the shard"):
            await via_a.add_then_transact(20)
        via_b = b.namespace("ledgers").get_by_name(name)
        assert await via_b.entries() == [10, 11], "no INSERT of the stale member landed"
        assert await via_b.count() == 1


async def _until_busy_in(runtime: td.Runtime, stub: td.Stub) -> None:
    """Wait until ``stub``'s object, live in ``runtime``, is running an event."""
    while (record := runtime.registry.lookup(stub.id.namespace, stub.id.hex)) is None or (
        not record.busy
    ):
        await trio.sleep(0.01)


async def test_a_member_closing_its_links_answers_the_calls_in_flight_first(
    pair: tuple[td.Runtime, td.Runtime],
) -> None:
    """A worker going away (after a hand-over) does not cut another worker's call."""
    a, b = pair
    assert a.cluster is not None
    [name] = _owned_by(a)
    via_b = b.namespace("counters").get_by_name(name)
    answers: list[str] = []

    async def call() -> None:
        answers.append(await via_b.nap(0.5))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            await _until_busy_in(a, via_b)
            await a.cluster.close_links()
    assert answers == ["rested"], "the call in flight was answered before the link closed"


async def test_a_call_cut_by_a_broken_link_is_a_reset_caused_by_an_unreachable_owner(
    pair: tuple[td.Runtime, td.Runtime],
) -> None:
    """Not the object's fault: a gateway can answer it as an owner out of reach (503)."""
    a, b = pair
    assert a.cluster is not None
    [name] = _owned_by(a)
    via_b = b.namespace("counters").get_by_name(name)
    outcome: list[BaseException] = []

    async def call() -> None:
        try:
            await via_b.nap(30)
        except td.ObjectResetError as exc:
            outcome.append(exc)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            await _until_busy_in(a, via_b)
            with trio.move_on_after(0.1):  # the call would take 30 s: its link is cut
                await a.cluster.close_links()
    assert len(outcome) == 1, outcome
    assert isinstance(outcome[0].__cause__, td.ObjectUnavailableError), outcome[0].__cause__


class NoShardEvents:
    """A member's shard events that do nothing (a member tested alone, without a runtime)."""

    def shards_lost(self, shards: Any) -> None:
        pass

    def shards_gained(self, shards: Any) -> None:
        pass

    async def freeze(self, shards: Any) -> None:
        pass

    async def hand_over(self, shards: Any, successor: Any) -> None:
        pass


async def test_the_fence_leaves_out_shards_whose_lease_lapsed_locally(
    tmp_path: Path, run_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process paused past its lease does not even try to commit for those shards."""
    store = SqliteLeaseStore(tmp_path / "trio_durable.sqlite3")
    await store.setup()
    spec = ClusterSpec(slot=0, run_dir=run_dir, lease_seconds=30)
    member = ClusterMember(spec, store, b"k" * 32, NoShardEvents())
    await member._round()  # one lease round, without running the member
    assert set(member.fence().epochs) == set(range(256)), "a fresh lease: every shard"
    paused_until = time.monotonic() + 30  # past the local share of a 30 s lease
    with monkeypatch.context() as patched:
        patched.setattr(_member.time, "monotonic", lambda: paused_until)
        fence = member.fence()
    assert dict(fence.epochs) == {}, "every lease lapsed by the member's clock"
    await store.aclose()


async def test_links_waiting_for_their_proof_are_bounded(
    pair: tuple[td.Runtime, td.Runtime],
) -> None:
    """Strangers that connect and say nothing hold a few KiB each, and only so many."""
    a, _ = pair
    assert a.cluster is not None
    extra = 3
    socks = []
    try:
        for _ in range(_member.MAX_PENDING_HANDSHAKES + extra):
            sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            await sock.connect(a.cluster.member.address)
            socks.append(sock)
        answers = []
        with trio.fail_after(4):  # before the pending ones' handshake timeout (5 s)
            for sock in socks:
                answers.append(await sock.recv(4096))
        refused = [n for n, data in enumerate(answers) if data == b""]
        assert len(refused) == extra, f"closed at once: {refused}"
    finally:
        for sock in socks:
            sock.close()


@pytest.mark.parametrize("name", ["lease_seconds", "call_timeout"])
def test_a_cluster_spec_refuses_seconds_that_are_not_positive(name: str) -> None:
    with pytest.raises(ValueError, match=f"{name} must be a positive, finite number of seconds"):
        ClusterSpec(slot=0, run_dir="run", **{name: 0})


async def test_an_unreachable_owner_gives_object_unavailable_after_call_timeout(
    tmp_path: Path, run_dir: str
) -> None:
    """It renews its leases (nobody takes its shards), but answers no link: no hang."""
    lock = DataDirLock.acquire(tmp_path)
    call_timeout = 1.0
    try:
        async with AsyncExitStack() as stack:
            a, b = [
                await stack.enter_async_context(
                    td.open_runtime(
                        OBJECTS,
                        backend=td.SqliteBackend(tmp_path, lock_fd=os.dup(lock.fd)),
                        cluster=ClusterSpec(
                            slot=slot,
                            run_dir=run_dir,
                            lease_seconds=LEASE,
                            call_timeout=call_timeout,
                        ),
                    )
                )
                for slot in (0, 1)
            ]
            assert b.cluster is not None
            with trio.fail_after(20):
                while not _held(b):
                    await trio.sleep(0.05)
            [name] = _owned_by(b)
            stub = a.namespace("counters").get_by_name(name)
            assert await stub.increment() == 1, "reached through the link"
            await b.cluster.close_links()  # b stops answering links; it keeps its leases
            started = trio.current_time()
            with trio.fail_after(call_timeout + 10), pytest.raises(td.ObjectUnavailableError):
                await stub.increment()
            waited = trio.current_time() - started
            assert waited >= call_timeout, f"it tried for call_timeout, not {waited:.2f} s"
    finally:
        lock.release()


async def test_a_hand_over_whose_release_fails_is_retried_by_a_later_round(
    tmp_path: Path, run_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The storage refusing a release (out of reach) does not end the member."""
    lock = DataDirLock.acquire(tmp_path)
    try:
        async with AsyncExitStack() as stack:

            def member(slot: int) -> AbstractAsyncContextManager[td.Runtime]:
                return td.open_runtime(
                    OBJECTS,
                    backend=td.SqliteBackend(tmp_path, lock_fd=os.dup(lock.fd)),
                    cluster=ClusterSpec(slot=slot, run_dir=run_dir, lease_seconds=LEASE),
                )

            a = await stack.enter_async_context(member(0))
            with trio.fail_after(20):
                while len(_held(a)) < 256:
                    await trio.sleep(0.05)
            assert a.cluster is not None
            store = a.cluster._store
            release = store.release
            refusals: list[int] = []

            async def refuse_once(member_id: str, shards: Collection[int]) -> None:
                if not refusals:
                    refusals.append(len(shards))
                    raise td.StorageError("the database is out of reach")
                await release(member_id, shards)

            store.release = refuse_once  # type: ignore[method-assign]
            b = await stack.enter_async_context(member(1))
            with trio.fail_after(20):
                while not (_held(a) and _held(b) and len(_held(a) | _held(b)) == 256):
                    await trio.sleep(0.05)
            assert refusals, "the first release was refused"
            assert any("releasing" in r.getMessage() for r in caplog.records)
            [name] = _owned_by(a)
            assert await a.namespace("counters").get_by_name(name).increment() == 1, "a runs on"
    finally:
        lock.release()
