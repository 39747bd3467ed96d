"""Values of every kind cross RPC through the public API: a stub's ``keep`` then ``get``.

In one process the call copies its arguments and its result; between two
members of a cluster they are encoded and decoded. Either way what comes
back must be the value itself, with each zone as its fixed offset, and the
same program must see the same values in both.

The two members are opened once, in a Trio run on a thread of their own, so
that hypothesis can send hundreds of values through them without waiting for
the shards to be split again for each one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TypeVar

import attrs
import pytest
import trio
from hypothesis import HealthCheck, given, settings

import trio_durable as td
from tests.cluster.test_members import LEASE, _held
from trio_durable._cluster._member import ClusterSpec
from trio_durable._ids import shard_of
from trio_durable._storage._lock import DataDirLock

from ._same import fixed_zones, same
from ._strategies import rpc_values

T = TypeVar("T")


@attrs.define(eq=False)
class Keeper(td.DurableObject):
    """Keeps the last value it was given, in memory, and gives it back."""

    kept: Any = None

    async def keep(self, value: Any) -> None:
        self.kept = value

    async def get(self) -> Any:
        return self.kept


OBJECTS: dict[str, type[td.DurableObject]] = {"keepers": Keeper}


async def _keep_then_get(stub: td.Stub, value: Any) -> Any:
    await stub.keep(value)
    return await stub.get()


# ------------------------------------------------------------------ one process


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(rpc_values)
async def test_values_cross_a_stub_in_one_process(value: Any) -> None:
    async with td.open_runtime(OBJECTS) as rt:
        back = await _keep_then_get(rt.namespace("keepers").get_by_name("k"), value)
    assert same(fixed_zones(value), back), f"{value!r} came back as {back!r}"


# ------------------------------------------------------------------ two members


class Members:
    """Two cluster members open in a Trio run on their own thread.

    ``call(fn, a, b)`` runs ``fn(a, b)`` in that run (``a`` and ``b`` are the
    two runtimes) and returns its result to the calling thread.
    """

    def __init__(self, data_dir: Path, run_dir: str) -> None:
        self._data_dir = data_dir
        self._run_dir = run_dir
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._runtimes: tuple[td.Runtime, td.Runtime] | None = None
        self._thread = threading.Thread(target=self._run, name="cluster-members", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(120):
            raise AssertionError("the two members did not split the shards within 120 s")
        if self._failure is not None:
            raise self._failure

    def call(self, fn: Callable[[td.Runtime, td.Runtime], Awaitable[T]]) -> T:
        assert self._token is not None and self._runtimes is not None
        a, b = self._runtimes

        async def run() -> T:
            with trio.fail_after(60):  # generous: only a hung call gets near it
                return await fn(a, b)

        return trio.from_thread.run(run, trio_token=self._token)

    def stop(self) -> None:
        if self._token is not None and self._stop is not None:
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(60)
        if self._failure is not None:
            raise self._failure

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # reported to the test's thread
            self._failure = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        lock = DataDirLock.acquire(self._data_dir)
        try:
            async with AsyncExitStack() as stack:
                runtimes = []
                for slot in (0, 1):
                    backend = td.SqliteBackend(self._data_dir, lock_fd=os.dup(lock.fd))
                    spec = ClusterSpec(slot=slot, run_dir=self._run_dir, lease_seconds=LEASE)
                    runtime = td.open_runtime(OBJECTS, backend=backend, cluster=spec)
                    runtimes.append(await stack.enter_async_context(runtime))
                a, b = runtimes
                with trio.fail_after(60):
                    while not (_held(a) and _held(b) and len(_held(a) | _held(b)) == 256):
                        await trio.sleep(0.05)
                self._runtimes = (a, b)
                self._ready.set()
                await self._stop.wait()
        finally:
            lock.release()


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Members]:
    run_dir = tempfile.mkdtemp(prefix="td-")  # short: AF_UNIX paths are limited
    pair = Members(tmp_path_factory.mktemp("members"), run_dir)
    try:
        pair.start()
        yield pair
    finally:
        pair.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


def _name_owned_by_b(a: td.Runtime, b: td.Runtime) -> str:
    keepers = a.namespace("keepers")
    for n in range(10_000):
        if shard_of(keepers.id_from_name(f"k{n}").hex) in _held(b):
            return f"k{n}"
    raise AssertionError("no name falls in b's shards")


def test_the_object_runs_in_the_other_member(members: Members) -> None:
    async def where(a: td.Runtime, b: td.Runtime) -> tuple[int, int]:
        stub = a.namespace("keepers").get_by_name(_name_owned_by_b(a, b))
        await _keep_then_get(stub, 1)
        return a.statistics().live_objects, b.statistics().live_objects

    live_in_a, live_in_b = members.call(where)
    assert (live_in_a, live_in_b) == (0, 1), "the calls crossed from a to b"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rpc_values)
def test_values_cross_between_two_members(members: Members, value: Any) -> None:
    async def trip(a: td.Runtime, b: td.Runtime) -> Any:
        stub = a.namespace("keepers").get_by_name(_name_owned_by_b(a, b))
        return await _keep_then_get(stub, value)

    back = members.call(trip)
    assert same(fixed_zones(value), back), f"{value!r} came back as {back!r}"
