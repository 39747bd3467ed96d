"""Failures stay inside their object: errors reach callers, resets rebuild."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import trio_durable as td
from trio_durable.testing import run_in_object

from .objects import constructed


async def test_rpc_error_reaches_caller_with_its_type_and_object_lives_on(
    runtime: td.Runtime,
) -> None:
    stub = runtime.namespace("counters").get_by_name("a")
    await stub.increment()
    with pytest.raises(KeyError, match="boom"):
        await stub.fail("boom")
    assert await stub.increment() == 2, "the instance must survive a handler error"
    assert runtime.statistics().resets == 0, "a handler error is not a reset"


async def test_constructor_error_reaches_caller_and_next_call_retries(runtime: td.Runtime) -> None:
    stub = runtime.namespace("broken").get_by_name("a")
    with pytest.raises(RuntimeError, match="constructor failed"):
        await stub.ping()
    with pytest.raises(RuntimeError, match="constructor failed"):
        await stub.ping()
    assert constructed["Broken"] == 2, "each call must try a fresh constructor"
    stats = runtime.statistics()
    assert (stats.resets, stats.live_objects) == (2, 0), f"unexpected {stats}"


async def test_other_objects_keep_working_after_a_failure(runtime: td.Runtime) -> None:
    with pytest.raises(RuntimeError):
        await runtime.namespace("broken").get_by_name("a").ping()
    assert await runtime.namespace("counters").get_by_name("a").increment() == 1


async def test_block_concurrency_while_failure_resets_object(
    runtime: td.Runtime, autojump_clock: trio.testing.MockClock
) -> None:
    stub = runtime.namespace("workers").get_by_name("a")
    await stub.start(0)
    await trio.sleep(0.5)
    assert await stub.status() == ["work"]
    with pytest.raises(OSError, match="critical section failed"):
        await stub.bcw(True)
    assert await stub.status() == [], "the failed bcw must reset in-memory state"
    assert constructed["Worker"] == 2, "a fresh instance must be built after the reset"
    assert runtime.statistics().resets == 1


async def test_wait_until_failure_resets_object(
    runtime: td.Runtime, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    stub = runtime.namespace("workers").get_by_name("a")
    await stub.start(0)
    await trio.sleep(0.1)
    await stub.start(1, True)
    await trio.sleep(2)
    assert runtime.statistics().resets == 1, "failed background work must reset the object"
    assert await stub.status() == [], "the next call sees a fresh instance"
    assert "background work" in caplog.text and "failed" in caplog.text


async def test_abort_inside_handler_gives_caller_reset_error(runtime: td.Runtime) -> None:
    stub = runtime.namespace("counters").get_by_name("a")
    await stub.increment()
    with pytest.raises(td.ObjectResetError, match="reset"):
        await stub.abort_me("testing")
    assert await stub.increment() == 1, "after abort the object starts fresh"


async def test_abort_cancels_other_callers_in_flight(
    runtime: td.Runtime, autojump_clock: trio.testing.MockClock
) -> None:
    stub = runtime.namespace("counters").get_by_name("a")
    outcomes: list[str] = []

    async def sleeper() -> None:
        try:
            await stub.sleep(100)
            outcomes.append("finished")
        except td.ObjectResetError as exc:
            outcomes.append(f"reset: {exc.__cause__}")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sleeper)
        nursery.start_soon(sleeper)
        await trio.testing.wait_all_tasks_blocked()

        async def do_abort(instance: object, ctx: td.ObjectContext) -> None:
            ctx.abort("maintenance")

        with pytest.raises(td.ObjectResetError):
            await run_in_object(stub, do_abort)
    assert outcomes == ["reset: the object was aborted: maintenance"] * 2, outcomes
    assert trio.current_time() < 1, "aborted callers must not wait for the sleep"


async def test_new_instance_waits_for_old_one_to_close(
    runtime: td.Runtime, autojump_clock: trio.testing.MockClock
) -> None:
    stub = runtime.namespace("counters").get_by_name("a")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stub.sleep, 5)
        await trio.testing.wait_all_tasks_blocked()
        evicting = runtime.registry.lookup("counters", stub.id.hex)
        assert evicting is not None
        nursery.start_soon(_evict, stub)
        await trio.testing.wait_all_tasks_blocked()
        # This call waits for the old instance to close before a new one is built.
        assert await stub.increment() == 1
        assert trio.current_time() == 5.0, "the new instance starts when the old one has closed"
    assert constructed["Counter"] == 2


async def _evict(stub: td.Stub) -> None:
    from trio_durable.testing import evict

    await evict(stub)
