"""Hibernation end to end: td.serve on a real port, the `websockets` library as client."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trio
import websockets.sync.client

import trio_durable as td
from trio_durable.testing import evict

from .objects import Room, constructed


async def worker(request: td.Request, runtime: td.Runtime) -> td.Response:
    return await runtime.namespace("rooms").get_by_name("r").fetch(request)


@pytest.fixture
async def served() -> AsyncIterator[tuple[td.Runtime, str]]:
    async with td.open_runtime(objects={"rooms": Room}) as runtime, trio.open_nursery() as inner:
        port = await inner.start(
            functools.partial(td.serve, runtime, worker, host="127.0.0.1", port=0)
        )
        yield runtime, f"ws://127.0.0.1:{port}/?name=ann"
        inner.cancel_scope.cancel()


@pytest.fixture
async def client(served: tuple[td.Runtime, str]) -> AsyncIterator[Any]:
    connection = await in_thread(connect, served[1])
    yield connection
    await in_thread(connection.close)


def connect(url: str) -> Any:
    return websockets.sync.client.connect(url, open_timeout=5, close_timeout=2, legacy=True)


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await trio.to_thread.run_sync(functools.partial(fn, *args))


async def test_pings_auto_responses_and_outside_sends_never_wake_a_hibernated_object(
    served: tuple[td.Runtime, str], client: Any
) -> None:
    runtime, _ = served
    stub = runtime.namespace("rooms").get_by_name("r")
    await stub.set_auto("ping", "pong")
    sockets = await td_sockets(stub)
    assert await evict(stub) is True
    before = constructed["Room"]

    pong_waiter = await in_thread(client.ping, b"are you there")
    assert await in_thread(pong_waiter.wait, 2), "a protocol ping is answered"
    await in_thread(client.send, "ping")
    assert await in_thread(client.recv, 2) == "pong", "the auto-response is answered"
    for ws in sockets:
        await ws.send("from outside")
    assert await in_thread(client.recv, 2) == "from outside"

    assert constructed["Room"] == before, "none of these may wake the object"
    assert runtime.statistics().live_objects == 0

    await in_thread(client.send, "whoami")
    assert await in_thread(client.recv, 2) == "ann seen=1 tags=['room']"
    assert constructed["Room"] == before + 1, "a real message wakes it"


async def td_sockets(stub: td.Stub) -> list[td.WebSocket]:
    from trio_durable.testing import run_in_object

    async def get(instance: Room, ctx: td.ObjectContext) -> list[td.WebSocket]:
        return ctx.get_websockets()

    return await run_in_object(stub, get)


async def test_messages_keep_their_order_across_forced_evictions(
    served: tuple[td.Runtime, str], client: Any
) -> None:
    runtime, _ = served
    stub = runtime.namespace("rooms").get_by_name("r")
    for round_ in range(5):

        def exchange(round_: int = round_) -> list[str]:
            for n in range(100):
                client.send(f"{round_}:{n}")
            return [client.recv(5) for _ in range(100)]

        echoes = await in_thread(exchange)
        assert echoes == [f"{round_}:{n}" for n in range(100)], f"round {round_}"
        assert await evict(stub) is True
    assert constructed["Room"] == 5, "every round ran on a fresh instance"


async def test_burst_sent_right_before_eviction_is_delivered(
    served: tuple[td.Runtime, str], client: Any
) -> None:
    runtime, _ = served
    stub = runtime.namespace("rooms").get_by_name("r")
    await in_thread(client.send, "burst")
    assert await evict(stub) is True

    def receive_all() -> list[str]:
        return [client.recv(5) for _ in range(100)]

    assert await in_thread(receive_all) == [f"burst {n}" for n in range(100)]
