"""``Runtime.statistics()``: each count moves when its event happens, and only then."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import attrs
import pytest
import trio
import trio.testing
import websockets.sync.client

import trio_durable as td
from trio_durable.testing import evict, open_websocket, run_in_object

from ..polling import eventually
from .objects import Counter


@attrs.define(eq=False)
class Echo(td.DurableObject):
    async def fetch(self, request: td.Request) -> td.Response:
        client, server = td.WebSocketPair()
        self.ctx.accept_websocket(server)
        return td.Response.websocket(client)

    async def websocket_message(self, ws: td.WebSocket, message: str | bytes) -> None:
        await ws.send(message)

    async def alarm(self, info: td.AlarmInfo) -> None:
        pass


OBJECTS = {"counters": Counter, "echoes": Echo}


def counts(runtime: td.Runtime) -> dict[str, Any]:
    return attrs.asdict(runtime.statistics())


def changed(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The fields that moved, with how much (durations: just that they grew)."""
    moved: dict[str, Any] = {}
    for name, value in after.items():
        if value != before[name]:
            moved[name] = "more" if isinstance(value, float) else value - before[name]
    return moved


async def test_an_activation(runtime_factory: Callable[..., Any]) -> None:
    async with runtime_factory(objects=OBJECTS) as runtime:
        before = counts(runtime)
        await runtime.namespace("counters").get_by_name("a").increment()
        assert changed(before, counts(runtime)) == {
            "live_objects": 1,
            "activations": 1,
            "events_dispatched": 1,
        }, "one activation, one event, nothing else"


async def test_an_eviction(
    runtime_factory: Callable[..., Any], autojump_clock: trio.testing.MockClock
) -> None:
    async with runtime_factory(objects=OBJECTS) as runtime:
        await runtime.namespace("counters").get_by_name("a").increment()
        before = counts(runtime)
        await trio.sleep(10)
        await trio.testing.wait_all_tasks_blocked()
        assert changed(before, counts(runtime)) == {"live_objects": -1, "evictions": 1}


async def test_a_reset(runtime_factory: Callable[..., Any]) -> None:
    async with runtime_factory(objects=OBJECTS) as runtime:
        stub = runtime.namespace("counters").get_by_name("a")
        await stub.increment()
        before = counts(runtime)
        with pytest.raises(td.ObjectResetError):
            await stub.abort_me("for the test")
        await trio.testing.wait_all_tasks_blocked()
        assert changed(before, counts(runtime)) == {
            "live_objects": -1,
            "resets": 1,
            "events_dispatched": 1,
        }


async def test_a_commit_counts_with_its_duration(runtime_factory: Callable[..., Any]) -> None:
    async with runtime_factory(objects=OBJECTS) as runtime:
        stub = runtime.namespace("echoes").get_by_name("a")
        await run_in_object(stub, lambda echo, ctx: ctx.storage.put("k", 1))
        before = counts(runtime)
        await run_in_object(stub, lambda echo, ctx: ctx.storage.put("k", 2))
        assert changed(before, counts(runtime)) == {
            "events_dispatched": 1,
            "commits": 1,
            "commit_seconds": "more",
        }


async def test_alarm_lag_is_how_late_it_started(
    runtime_factory: Callable[..., Any], autojump_clock: trio.testing.MockClock
) -> None:
    async with runtime_factory(objects=OBJECTS) as runtime:
        stub = runtime.namespace("echoes").get_by_name("a")
        # Three seconds in the past: it runs at once, three seconds late.
        await run_in_object(stub, lambda echo, ctx: ctx.storage.set_alarm(ctx.now() - 3))
        await trio.testing.wait_all_tasks_blocked()
        stats = runtime.statistics()
        assert stats.alarms_fired == 1, stats
        assert stats.alarm_lag_seconds == pytest.approx(3.0, abs=0.01), stats


async def test_a_message_in_and_out_and_a_hibernated_object(
    runtime_factory: Callable[..., Any], autojump_clock: trio.testing.MockClock
) -> None:
    async with runtime_factory(objects=OBJECTS) as runtime:
        stub = runtime.namespace("echoes").get_by_name("a")
        async with open_websocket(stub) as ws:
            before = counts(runtime)
            await ws.send("hi")
            assert await ws.receive() == "hi", "echoed"
            moved = changed(before, counts(runtime))
            assert moved == {"messages_received": 1, "messages_sent": 1, "events_dispatched": 1}
            assert runtime.statistics().hibernatable_websockets == 1, "one socket open"
            assert await evict(stub) is True, "it was live"
            stats = runtime.statistics()
            assert (stats.hibernated_objects, stats.live_objects) == (1, 0), (
                "evicted with an open socket: hibernated"
            )
            assert await run_in_object(stub, lambda e, ctx: ctx.broadcast("all")) == 1, "one socket"
            assert await ws.receive() == "all", "the broadcast arrived"
            assert runtime.statistics().messages_sent == before["messages_sent"] + 2, (
                "a broadcast counts its messages"
            )


async def test_a_parked_connection_then_an_awake_one() -> None:
    async with td.open_runtime(OBJECTS) as runtime, trio.open_nursery() as nursery:

        async def worker(request: td.Request, runtime: td.Runtime) -> td.Response:
            return await runtime.namespace("echoes").get_by_name("a").fetch(request)

        port = await nursery.start(
            functools.partial(td.serve, runtime, worker, host="127.0.0.1", port=0, park_after=3)
        )
        client = await trio.to_thread.run_sync(
            functools.partial(
                websockets.sync.client.connect,
                f"ws://127.0.0.1:{port}/",
                proxy=None,
                legacy=True,
                open_timeout=10,
            )
        )
        try:
            await eventually(lambda: runtime.statistics().connections_parked == 1)
            assert runtime.statistics().connections_awake == 0, "parked is not awake"
            # One message is served from the parking (the connection parks
            # again at once); a second one within park_after wakes it for good.
            await trio.to_thread.run_sync(client.send, "wake up")
            assert await trio.to_thread.run_sync(client.recv, 10) == "wake up", "echoed"
            await trio.to_thread.run_sync(client.send, "again")
            assert await trio.to_thread.run_sync(client.recv, 10) == "again", "echoed"
            stats = runtime.statistics()
            assert (stats.connections_awake, stats.connections_parked) == (1, 0), (
                "a connection that keeps talking is read by its own task, not parked"
            )
        finally:
            await trio.to_thread.run_sync(client.close)
        nursery.cancel_scope.cancel()


async def test_the_key_value_cache_budget(runtime_factory: Callable[..., Any]) -> None:
    budget = 64 * 1024

    async def fill(counter: Counter, ctx: td.ObjectContext) -> None:
        for n in range(200):
            await ctx.storage.put(f"k{n}", "x" * 1_000)

    async with runtime_factory(objects=OBJECTS, storage_cache_bytes=budget) as runtime:
        empty = runtime.statistics()
        assert (empty.storage_cache_bytes, empty.storage_cache_budget_bytes) == (0, budget)
        assert empty.storage_cache_evictions == 0
        await run_in_object(runtime.namespace("counters").get_by_name("a"), fill)
        full = runtime.statistics()
        assert 0 < full.storage_cache_bytes <= budget, "the caches stay within the budget"
        assert full.storage_cache_evictions > 0, "200 KB of values did not fit in 64 KiB"
