"""Input gate, write coalescing and the output gate (with backends that misbehave)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import trio_durable as td
from trio_durable import _codec
from trio_durable._storage._cache import ENTRY_OVERHEAD
from trio_durable.testing import evict, run_in_object

from .objects import OBJECTS, ControlledBackend, RecordingBackend


@pytest.fixture
async def controlled(tmp_path: Path) -> AsyncIterator[tuple[td.Runtime, ControlledBackend]]:
    backend = ControlledBackend(tmp_path)
    async with td.open_runtime(OBJECTS, backend=backend) as rt:
        yield rt, backend


async def test_writes_without_other_awaits_commit_together(tmp_path: Path) -> None:
    backend = RecordingBackend(tmp_path)
    async with td.open_runtime(OBJECTS, backend=backend) as rt:
        stub = rt.namespace("boxes").get_by_name("c")

        async def body(obj: Any, ctx: td.ObjectContext) -> None:
            await ctx.storage.put("a", 1)
            await ctx.storage.put("b", 2)
            await ctx.storage.delete("a")
            await ctx.storage.put("c", 3)

        await run_in_object(stub, body)
    expected = [[{"a": None, "b": _codec.encode(2), "c": _codec.encode(3)}]]
    assert backend.batches == expected, "one commit for all four"


async def test_writes_of_many_objects_share_commits(runtime: td.Runtime) -> None:
    boxes = runtime.namespace("boxes")
    engine = runtime.storage_engine
    before = engine.commits
    async with trio.open_nursery() as nursery:
        for i in range(50):
            nursery.start_soon(boxes.get_by_name(f"o{i}").put, "k", i)
    assert engine.objects_committed == 50, "every object's write was committed"
    assert engine.commits - before < 5, f"50 objects took {engine.commits - before} commits"


async def test_reply_waits_for_the_commit(controlled: tuple[td.Runtime, ControlledBackend]) -> None:
    rt, backend = controlled
    backend.commit_gate = trio.Event()
    replies = []

    async def call() -> None:
        replies.append(await rt.namespace("boxes").get_by_name("g").put("k", 1))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call)
        await trio.testing.wait_all_tasks_blocked()
        assert replies == [], "no reply while the write is uncommitted"
        assert backend.commits_started == 1, "the commit is in progress"
        backend.commit_gate.set()
    assert replies == ["ok"], "the reply leaves once committed"


async def test_failed_commit_drops_the_reply_and_resets(
    controlled: tuple[td.Runtime, ControlledBackend],
) -> None:
    rt, backend = controlled
    stub = rt.namespace("boxes").get_by_name("f")
    backend.fail_commits = True
    with pytest.raises(td.ObjectResetError) as info:
        await stub.put("k", 1)
    assert isinstance(info.value.__cause__, td.CommitFailedError), "the cause is the commit"
    assert rt.statistics().resets == 1, "the object was reset"


async def test_failed_commit_keeps_committed_data(
    controlled: tuple[td.Runtime, ControlledBackend],
) -> None:
    rt, backend = controlled
    stub = rt.namespace("boxes").get_by_name("f")
    await stub.put("k", "committed")
    backend.fail_commits = True
    with pytest.raises(td.ObjectResetError):
        await stub.put("k", "lost")
    backend.fail_commits = False
    assert await stub.get("k") == "committed", "the fresh instance reads the committed value"


async def test_failed_commit_drops_later_writes_of_the_object(
    controlled: tuple[td.Runtime, ControlledBackend],
) -> None:
    rt, backend = controlled
    stub = rt.namespace("boxes").get_by_name("f")
    backend.commit_gate = trio.Event()
    backend.fail_commits = True
    results: list[str] = []

    async def call(key: str) -> None:
        try:
            await stub.put(key, 1)
        except td.ObjectResetError:
            results.append(f"{key} dropped")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call, "first")
        await trio.testing.wait_all_tasks_blocked()  # "first" is being committed
        nursery.start_soon(call, "second")
        await trio.testing.wait_all_tasks_blocked()  # "second" is buffered
        backend.commit_gate.set()
    backend.fail_commits = False
    assert sorted(results) == ["first dropped", "second dropped"], "both replies dropped"
    assert (await stub.get("first"), await stub.get("second")) == (None, None), "nothing stored"


async def test_exception_after_a_write_keeps_the_write(box: td.Stub) -> None:
    with pytest.raises(KeyError):
        await box.put_then_fail("k", 1)
    await evict(box)
    assert await box.get("k") == 1, "a write outside a transaction is not undone by an error"


async def test_storage_call_keeps_other_events_out(
    controlled: tuple[td.Runtime, ControlledBackend],
) -> None:
    rt, backend = controlled
    stub = rt.namespace("boxes").get_by_name("gate")
    order: list[str] = []
    backend.read_gate = trio.Event()

    async def slow_read(obj: Any, ctx: td.ObjectContext) -> None:
        order.append("read started")
        await ctx.storage.get("uncached")
        order.append("read done")

    async def other(obj: Any, ctx: td.ObjectContext) -> None:
        order.append("other event")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_in_object, stub, slow_read)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(run_in_object, stub, other)
        await trio.testing.wait_all_tasks_blocked()
        assert order == ["read started"], "no event starts during the storage call"
        backend.read_gate.set()
    assert order == ["read started", "read done", "other event"], "the event ran after"


async def test_storage_calls_are_checkpoints(box: td.Stub) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> None:
        with trio.CancelScope() as scope:
            scope.cancel()
            await ctx.storage.get("k")
        assert scope.cancelled_caught, "the cancelled call raised Cancelled"

    await run_in_object(box, body)


async def test_cancelled_put_writes_nothing(box: td.Stub) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> Any:
        with trio.CancelScope() as scope:
            scope.cancel()
            await ctx.storage.put("k", 1)
        return await ctx.storage.get("k")

    assert None is await run_in_object(box, body), "a put cancelled before it ran did nothing"


async def test_cache_overflow_keeps_uncommitted_writes(tmp_path: Path) -> None:
    backend = ControlledBackend(tmp_path)
    entry = ENTRY_OVERHEAD + 1 + len(_codec.encode(1))  # a one-letter key, a small int
    async with td.open_runtime(OBJECTS, backend=backend, storage_cache_bytes=2 * entry) as rt:
        await _fill_cache_past_its_budget(rt, backend)


async def _fill_cache_past_its_budget(rt: td.Runtime, backend: ControlledBackend) -> None:
    stub = rt.namespace("boxes").get_by_name("cache")
    backend.commit_gate = trio.Event()  # everything below stays uncommitted
    seen: list[Any] = []

    async def body(obj: Any, ctx: td.ObjectContext) -> None:
        await ctx.storage.put({"a": 1, "b": 2, "c": 3, "d": 4})
        seen.append(await ctx.storage.get(["a", "b", "c", "d"]))
        seen.append(await ctx.storage.list(start="b"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_in_object, stub, body)
        await trio.testing.wait_all_tasks_blocked()
        backend.commit_gate.set()
    assert seen[0] == {"a": 1, "b": 2, "c": 3, "d": 4}, "dropping the cache lost nothing"
    assert seen[1] == {"b": 2, "c": 3, "d": 4}, "list() sees the uncommitted writes"
    assert rt.storages.cache_budget.evictions > 0, "the cache really was emptied on the way"
