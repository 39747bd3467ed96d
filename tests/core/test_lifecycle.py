"""Hibernation and eviction, with exact times on the autojump clock."""

from __future__ import annotations

import trio
import trio.testing

import trio_durable as td
from trio_durable.testing import evict, list_object_ids

from .conftest import OBJECTS
from .objects import constructed, slow_stop_log


def is_live(runtime: td.Runtime, stub: td.Stub) -> bool:
    return runtime.registry.lookup(stub.namespace.name, stub.id.hex) is not None


async def test_idle_object_is_evicted_exactly_hibernate_after_seconds_later(
    autojump_clock: trio.testing.MockClock,
    runtime: td.Runtime,
) -> None:
    stub = runtime.namespace("counters").get_by_name("a")
    await trio.sleep_until(3.0)
    await stub.increment()
    await trio.sleep_until(12.99)
    assert is_live(runtime, stub), "not evicted at 9.99 s after the last event"
    await trio.sleep_until(13.0)
    await trio.testing.wait_all_tasks_blocked()
    assert trio.current_time() == 13.0
    assert not is_live(runtime, stub), "evicted at exactly 10.0 s after the last event"
    assert runtime.statistics().evictions == 1


async def test_each_event_restarts_the_idle_clock(
    autojump_clock: trio.testing.MockClock, runtime: td.Runtime
) -> None:
    stub = runtime.namespace("counters").get_by_name("a")
    for _ in range(5):
        await stub.increment()
        await trio.sleep(9)
    assert is_live(runtime, stub), "events every 9 s keep the object in memory"
    assert constructed["Counter"] == 1


async def test_reinitialisation_resets_in_memory_fields(
    autojump_clock: trio.testing.MockClock, runtime: td.Runtime
) -> None:
    stub = runtime.namespace("counters").get_by_name("a")
    assert [await stub.increment(), await stub.increment()] == [1, 2]
    await trio.sleep(10)
    await trio.testing.wait_all_tasks_blocked()  # the eviction timer shares this deadline
    assert await stub.increment() == 1, "a fresh instance starts from the field defaults"
    assert constructed["Counter"] == 2, "the constructor runs again after hibernation"


async def test_hibernate_after_is_configurable(
    autojump_clock: trio.testing.MockClock, runtime_factory
) -> None:  # type: ignore[no-untyped-def]
    async with runtime_factory(objects=OBJECTS, hibernate_after=2.5) as rt:
        stub = rt.namespace("counters").get_by_name("a")
        await stub.increment()
        await trio.sleep_until(2.49)
        assert is_live(rt, stub)
        await trio.sleep_until(2.5)
        await trio.testing.wait_all_tasks_blocked()
        assert not is_live(rt, stub), "evicted at exactly 2.5 s"


async def test_running_handler_prevents_eviction(
    autojump_clock: trio.testing.MockClock, runtime: td.Runtime
) -> None:
    stub = runtime.namespace("counters").get_by_name("a")
    assert await stub.sleep(25) == "slept"
    assert trio.current_time() == 25.0
    assert is_live(runtime, stub), "no eviction while a handler runs"
    assert runtime.statistics().evictions == 0


async def test_background_work_pins_until_evict_after(
    autojump_clock: trio.testing.MockClock, runtime: td.Runtime
) -> None:
    stub = runtime.namespace("workers").get_by_name("a")
    await stub.start(1_000)
    await trio.sleep_until(69.99)
    assert is_live(runtime, stub), "background work keeps the object awake"
    await trio.sleep_until(70.0)
    await trio.testing.wait_all_tasks_blocked()
    assert not is_live(runtime, stub), "evicted evict_after=70 s after its last event"
    assert trio.current_time() == 70.0
    assert await stub.status() == [], "the background work was cancelled, not completed"


async def test_finished_background_work_lets_object_hibernate(
    autojump_clock: trio.testing.MockClock, runtime: td.Runtime
) -> None:
    stub = runtime.namespace("workers").get_by_name("a")
    await stub.start(5)
    await trio.sleep_until(14.99)
    assert is_live(runtime, stub), "idle clock starts when the background work ends (t=5)"
    await trio.sleep_until(15.0)
    await trio.testing.wait_all_tasks_blocked()
    assert not is_live(runtime, stub), "evicted at exactly 15.0"


async def test_evict_waits_for_the_handler_in_flight(
    autojump_clock: trio.testing.MockClock, runtime: td.Runtime
) -> None:
    stub = runtime.namespace("counters").get_by_name("a")
    results: list[str] = []
    async with trio.open_nursery() as nursery:

        async def call() -> None:
            results.append(await stub.sleep(4))

        nursery.start_soon(call)
        await trio.testing.wait_all_tasks_blocked()
        assert await evict(stub) is True
        assert trio.current_time() == 4.0, "eviction waited for the running handler"
    assert results == ["slept"], "the handler in flight completed normally"
    assert not is_live(runtime, stub)


async def test_evict_of_an_object_that_is_not_live_returns_false(
    autojump_clock: trio.testing.MockClock, runtime: td.Runtime
) -> None:
    assert await evict(runtime.namespace("counters").get_by_name("never")) is False


async def test_racing_activations_build_one_instance(
    autojump_clock: trio.testing.MockClock, runtime: td.Runtime
) -> None:
    stub = runtime.namespace("counters").get_by_name("a")
    results: list[int] = []
    async with trio.open_nursery() as nursery:
        for _ in range(100):
            nursery.start_soon(lambda: _append(results, stub.increment()))
    assert sorted(results) == list(range(1, 101)), "all calls hit one instance"
    assert constructed["Counter"] == 1, "one live instance per ID, ever"


async def _append(results: list[int], awaitable) -> None:  # type: ignore[no-untyped-def]
    results.append(await awaitable)


async def test_list_object_ids_has_every_activated_id(
    autojump_clock: trio.testing.MockClock, runtime: td.Runtime
) -> None:
    ns = runtime.namespace("counters")
    unique = ns.new_unique_id()
    await ns.get(unique).increment()
    await ns.get_by_name("named").increment()
    await trio.sleep(30)  # both hibernate: the list is durable, not the live set
    ids = await list_object_ids(ns)
    assert sorted(ids, key=str) == sorted([unique, ns.id_from_name("named")], key=str)
    assert {i.name for i in ids} == {None, "named"}, "names are remembered"


async def test_list_object_ids_survives_restart(
    autojump_clock: trio.testing.MockClock, runtime_factory
) -> None:  # type: ignore[no-untyped-def]
    async with runtime_factory(objects=OBJECTS) as rt:
        await rt.namespace("counters").get_by_name("x").increment()
    async with runtime_factory(objects=OBJECTS) as rt:
        ids = await list_object_ids(rt.namespace("counters"))
        assert [i.name for i in ids] == ["x"], f"got {ids}"


async def test_a_call_arriving_exactly_at_the_eviction_deadline_is_served_by_one_instance(
    runtime: td.Runtime, autojump_clock: trio.testing.MockClock
) -> None:
    # The eviction timer and the caller wake at the same instant; Trio runs
    # them in either order. Whichever wins, the call must succeed, and the
    # old instance must never overlap a new one.
    ns = runtime.namespace("counters")
    results: list[str] = []
    for n in range(40):
        stub = ns.get_by_name(f"race{n}")
        await stub.increment()
        start = trio.current_time()

        async def call_at_deadline(stub: td.Stub = stub, start: float = start) -> None:
            await trio.sleep_until(start + 10.0)
            results.append(await stub.sleep(1))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call_at_deadline)
            await trio.sleep_until(start + 10.5)
            live = runtime.registry.lookup("counters", stub.id.hex)
            assert live is not None and live.busy == 1, (
                f"round {n}: a handler is running, so its object must be live"
            )
    assert results == ["slept"] * 40, results


async def test_an_object_without_background_work_costs_no_task(runtime: td.Runtime) -> None:
    counters = runtime.namespace("counters")
    before = trio.lowlevel.current_statistics().tasks_living
    for n in range(200):
        await counters.get_by_name(f"n{n}").increment()
    grown = trio.lowlevel.current_statistics().tasks_living - before
    assert runtime.statistics().live_objects == 200
    assert grown < 10, f"{grown} more tasks for 200 live objects that only answer calls"


async def test_background_work_gets_a_host_task_that_ends_with_the_object(
    autojump_clock: trio.testing.MockClock, runtime: td.Runtime
) -> None:
    stub = runtime.namespace("workers").get_by_name("hosted")
    await stub.status()
    before = trio.lowlevel.current_statistics().tasks_living
    await stub.start(1_000)
    await trio.testing.wait_all_tasks_blocked()
    during = trio.lowlevel.current_statistics().tasks_living
    assert during - before == 2, "one host task (the object's nursery) and the work itself"
    await evict(stub)
    await trio.testing.wait_all_tasks_blocked()
    after = trio.lowlevel.current_statistics().tasks_living
    assert after == before, "eviction ended the host task and the work"


async def test_new_instance_waits_until_the_old_background_work_has_ended(
    autojump_clock: trio.testing.MockClock, runtime: td.Runtime
) -> None:
    stub = runtime.namespace("workers").get_by_name("slow-stop")
    log = slow_stop_log
    log.clear()
    await stub.start_slow_to_stop()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(evict, stub)
        await trio.testing.wait_all_tasks_blocked()
        # A call now needs a new instance: it must not be built while the old
        # instance's background work is still cleaning up.
        await stub.start_slow_to_stop()
    assert log[:3] == ["constructed before", "old work cleaned up", "constructed before"], log
