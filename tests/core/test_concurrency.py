"""Input gate: arrival order, interleaving at outside I/O, block_concurrency_while."""

from __future__ import annotations

from typing import Any

import attrs
import trio
import trio.lowlevel
import trio.testing

import trio_durable as td
from trio_durable._core._gates import InputGate


@attrs.define(eq=False)
class Tracker(td.DurableObject):
    """Records when events start, run and end."""

    running: int = 0
    max_running: int = 0
    started: list[int] = attrs.field(factory=list)
    started_during_bcw: list[int] = attrs.field(factory=list)
    in_bcw: bool = False
    log: list[str] = attrs.field(factory=list)

    async def work(self, n: int) -> int:
        self.started.append(n)
        if self.in_bcw:
            self.started_during_bcw.append(n)
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        # Outside I/O: another object's RPC that takes a while.
        await self.ctx.namespace("slow").get_by_name("s").wait(1)
        self.running -= 1
        return n

    async def critical(self, seconds: float) -> None:
        async def hold() -> None:
            self.in_bcw = True
            self.log.append("bcw start")
            await self.ctx.namespace("slow").get_by_name("s").wait(seconds)
            self.log.append("bcw end")
            self.in_bcw = False

        await self.ctx.block_concurrency_while(hold)

    async def wait_then_log(self, seconds: float) -> None:
        await self.ctx.namespace("slow").get_by_name("s").wait(seconds)
        self.log.append("resumed")

    async def stats(self) -> dict[str, Any]:
        return {
            "max_running": self.max_running,
            "started": self.started,
            "started_during_bcw": self.started_during_bcw,
            "log": self.log,
        }

    async def call_peer(self, peer: str, depth: int) -> str:
        if depth == 0:
            return "bottom"
        other = self.ctx.namespace("tracker").get_by_name(peer)
        me = self.ctx.id.name or ""
        return await other.call_peer(me, depth - 1)


@attrs.define(eq=False)
class Slow(td.DurableObject):
    async def wait(self, seconds: float) -> None:
        await trio.sleep(seconds)


OBJECTS = {"tracker": Tracker, "slow": Slow}


async def test_handlers_interleave_at_outside_io(
    autojump_clock: trio.testing.MockClock, runtime_factory
) -> None:  # type: ignore[no-untyped-def]
    async with runtime_factory(objects=OBJECTS) as rt:
        stub = rt.namespace("tracker").get_by_name("t")
        async with trio.open_nursery() as nursery:
            for n in range(50):
                nursery.start_soon(stub.work, n)
        stats = await stub.stats()
    assert stats["max_running"] == 50, "all 50 handlers overlap while awaiting another object"
    assert trio.current_time() == 1.0, "they ran concurrently, not one after another"


async def test_events_start_in_arrival_order_even_behind_a_held_gate(
    autojump_clock: trio.testing.MockClock, runtime_factory
) -> None:  # type: ignore[no-untyped-def]
    async with runtime_factory(objects=OBJECTS) as rt:
        stub = rt.namespace("tracker").get_by_name("t")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stub.critical, 5)
            await trio.testing.wait_all_tasks_blocked()
            for n in range(50):
                nursery.start_soon(stub.work, n)
                await trio.testing.wait_all_tasks_blocked()  # fixes arrival order
        stats = await stub.stats()
    assert stats["started"] == list(range(50)), "events must start in arrival order"
    assert stats["started_during_bcw"] == [], "no event may start inside block_concurrency_while"
    assert trio.current_time() == 6.0, "they waited for the 5 s critical section, then overlapped"


async def test_block_concurrency_while_holds_back_handlers_returning_from_io(
    autojump_clock: trio.testing.MockClock, runtime_factory
) -> None:  # type: ignore[no-untyped-def]
    async with runtime_factory(objects=OBJECTS) as rt:
        stub = rt.namespace("tracker").get_by_name("t")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stub.wait_then_log, 1)  # its I/O finishes at t=1
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(stub.critical, 3)  # holds the gate from t=0 to t=3
        stats = await stub.stats()
    assert stats["log"] == ["bcw start", "bcw end", "resumed"], (
        f"a handler whose I/O completed must not resume inside bcw: {stats['log']}"
    )


async def test_a_b_a_call_chain_does_not_deadlock(
    autojump_clock: trio.testing.MockClock, runtime_factory
) -> None:  # type: ignore[no-untyped-def]
    async with runtime_factory(objects=OBJECTS) as rt:
        a = rt.namespace("tracker").get_by_name("a")
        with trio.fail_after(5):
            assert await a.call_peer("b", 5) == "bottom", "A->B->A->B->A->B must complete"


async def test_input_gate_hands_over_in_fifo_order_whatever_the_scheduler_does(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = InputGate()
    order: list[int] = []
    await gate.acquire()

    async def passer(n: int) -> None:
        await gate.pass_through()
        order.append(n)

    async with trio.open_nursery() as nursery:
        for n in range(20):
            nursery.start_soon(passer, n)
            await trio.testing.wait_all_tasks_blocked()
        gate.release()
    assert order == list(range(20)), f"gate must be FIFO, got {order}"


async def test_input_gate_cancelled_waiter_leaves_the_queue(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = InputGate()
    order: list[str] = []
    await gate.acquire()
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()

        async def doomed() -> None:
            with scope:
                await gate.pass_through()
                order.append("doomed")

        async def next_one() -> None:
            await gate.pass_through()
            order.append("next")

        nursery.start_soon(doomed)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(next_one)
        await trio.testing.wait_all_tasks_blocked()
        scope.cancel()  # doomed leaves the queue while waiting
        await trio.testing.wait_all_tasks_blocked()
        gate.release()
    assert order == ["next"], f"the gate must not stall: {order}"


async def test_a_loop_of_calls_that_never_block_still_lets_other_tasks_run(
    runtime_factory,
) -> None:  # type: ignore[no-untyped-def]
    ticks: list[int] = []

    async def ticker() -> None:
        while True:
            ticks.append(1)
            await trio.lowlevel.checkpoint()

    async with runtime_factory(objects=OBJECTS) as rt, trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        await trio.lowlevel.checkpoint()
        stub = rt.namespace("slow").get_by_name("s")
        before = len(ticks)
        for _ in range(640):
            await stub.wait(0)  # trio.sleep(0) inside: blocks, so yields
        blocked_calls_ticks = len(ticks) - before
        tracker = rt.namespace("tracker").get_by_name("t")
        before = len(ticks)
        for _ in range(640):
            await tracker.call_peer("x", 0)  # never blocks
        free_calls_ticks = len(ticks) - before
        nursery.cancel_scope.cancel()
    assert blocked_calls_ticks >= 600, blocked_calls_ticks
    # 640 calls with a budget of 64 yield 9 or 10 times (the budget carries
    # over from earlier calls); without the budget they would yield 0 times.
    assert free_calls_ticks >= 640 // 64 - 1, (
        f"a loop of non-blocking calls must yield at least every 64 calls: {free_calls_ticks}"
    )


@attrs.define(eq=False)
class Tally(td.DurableObject):
    async def add_one(self) -> None:
        count = await self.ctx.storage.get("count") or 0
        await self.ctx.storage.put("count", count + 1)

    async def add_one_after_a_nap(self) -> None:
        count = await self.ctx.storage.get("count") or 0
        await trio.lowlevel.checkpoint()  # outside I/O: other events may run here
        await self.ctx.storage.put("count", count + 1)

    async def count(self) -> int:
        return int(await self.ctx.storage.get("count") or 0)


async def test_get_then_put_with_no_other_await_is_atomic() -> None:
    async with td.open_runtime({"tally": Tally}) as runtime:
        stub = runtime.namespace("tally").get_by_name("t")

        async def caller() -> None:
            for _ in range(50):
                await stub.add_one()

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(caller)
        assert await stub.count() == 200, "no event slipped in between the get and the put"


async def test_an_outside_await_between_get_and_put_lets_events_in() -> None:
    async with td.open_runtime({"tally": Tally}) as runtime:
        stub = runtime.namespace("tally").get_by_name("t")
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(stub.add_one_after_a_nap)
        assert await stub.count() < 4, "handlers interleave at outside I/O (as documented)"


async def test_a_released_gate_taken_back_by_its_holder_keeps_the_waiter_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = InputGate()
    order: list[str] = []
    await gate.acquire()
    async with trio.open_nursery() as nursery:

        async def event() -> None:
            await gate.pass_through()
            order.append("event")

        nursery.start_soon(event)
        await trio.testing.wait_all_tasks_blocked()
        gate.release()
        assert gate.try_hold(), "the holder goes on into its next storage call"
        order.append("second storage call")
        await trio.testing.wait_all_tasks_blocked()
        assert order == ["second storage call"], "the event waits while the gate is held"
        gate.release()
    assert order == ["second storage call", "event"]
