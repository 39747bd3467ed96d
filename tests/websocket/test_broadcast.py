"""``ctx.broadcast(message, tag=None, exclude=())``: one message to many hibernatable sockets."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
import websockets.sync.client

import trio_durable as td
from trio_durable._storage._backend import Fence, ObjectWrite
from trio_durable._websocket import _network
from trio_durable._websocket._socket import socket_transport
from trio_durable.testing import evict, open_websocket, run_in_object

from ..polling import eventually

built: list[str] = []


@attrs.define(eq=False)
class Hall(td.DurableObject):
    """Accepts hibernatable sockets with the tags of the query (``?tags=a,b``)."""

    def __attrs_post_init__(self) -> None:
        built.append(self.ctx.id.hex)

    async def fetch(self, request: td.Request) -> td.Response:
        client, server = td.WebSocketPair()
        tags = [tag for tag in request.query.get("tags", "").split(",") if tag]
        self.ctx.accept_websocket(server, tags=tags)
        return td.Response.websocket(client)

    async def websocket_message(self, ws: td.WebSocket, message: str | bytes) -> None:
        await ws.send(message)


class GatedBackend(td.SqliteBackend):
    """Commits wait for ``gate`` when it is set; counts the commits begun."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.gate: trio.Event | None = None
        self.commits_started = 0

    async def commit(
        self, writes: Sequence[ObjectWrite], fence: Fence | None = None
    ) -> frozenset[int]:
        self.commits_started += 1
        if self.gate is not None:
            await self.gate.wait()
        return await super().commit(writes, fence)


@pytest.fixture(autouse=True)
def _forget_builds() -> None:
    built.clear()


@pytest.fixture
async def hall(runtime_factory: Callable[..., Any]) -> AsyncIterator[td.Stub]:
    async with runtime_factory(objects={"halls": Hall}) as runtime:
        yield runtime.namespace("halls").get_by_name("main")


async def broadcast(stub: td.Stub, message: str | bytes, **options: Any) -> int:
    async def body(instance: Hall, ctx: td.ObjectContext) -> int:
        return await ctx.broadcast(message, **options)

    return await run_in_object(stub, body)


async def sockets_of(stub: td.Stub) -> list[td.WebSocket]:
    return await run_in_object(stub, lambda instance, ctx: ctx.get_websockets())


async def nothing_arrives(client: td.WebSocket, wait: float = 5.0) -> bool:
    with trio.move_on_after(wait):
        await client.receive()
        return False
    return True


async def test_every_socket_gets_the_message_and_the_count_is_returned(hall: td.Stub) -> None:
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(open_websocket(hall)) for _ in range(3)]
        assert await broadcast(hall, "hello all") == 3, "sent to the three sockets"
        assert [await c.receive() for c in clients] == ["hello all"] * 3, "text stays text"
        assert await broadcast(hall, b"\x00\x01") == 3, "bytes to the three"
        assert [await c.receive() for c in clients] == [b"\x00\x01"] * 3, "bytes stay binary"


async def test_tag_selects_the_sockets(hall: td.Stub, autojump_clock: Any) -> None:
    async with (
        open_websocket(hall, "http://t/?tags=red") as red,
        open_websocket(hall, "http://t/?tags=blue") as blue,
        open_websocket(hall, "http://t/?tags=red,blue") as both,
    ):
        assert await broadcast(hall, "to red", tag="red") == 2
        assert [await red.receive(), await both.receive()] == ["to red", "to red"]
        assert await nothing_arrives(blue), "a socket without the tag gets nothing"


async def test_exclude_takes_one_socket_or_several(hall: td.Stub, autojump_clock: Any) -> None:
    async with (
        open_websocket(hall) as first,
        open_websocket(hall) as second,
        open_websocket(hall) as third,
    ):
        one, two, _ = await sockets_of(hall)
        assert await broadcast(hall, "not to the first", exclude=one) == 2
        assert [await second.receive(), await third.receive()] == ["not to the first"] * 2, (
            "the others got it"
        )
        assert await broadcast(hall, "to the third", exclude=[one, two]) == 1
        assert await third.receive() == "to the third", "the one left"
        assert await nothing_arrives(first) and await nothing_arrives(second), (
            "excluded sockets got nothing"
        )


async def test_closed_and_closing_sockets_are_skipped(hall: td.Stub) -> None:
    async with (
        open_websocket(hall) as staying,
        open_websocket(hall) as leaving,
        open_websocket(hall),
    ):
        _, left_end, closing_end = await sockets_of(hall)
        await leaving.close()
        await trio.testing.wait_all_tasks_blocked()
        assert left_end.ready_state == td.WebSocket.CLOSED, "the client closed it"
        await run_in_object(hall, lambda instance, ctx: closing_end.close(1000, "bye"))
        assert closing_end.ready_state == td.WebSocket.CLOSING, "the object is closing it"
        assert await broadcast(hall, "still here?") == 1, "only the open socket counts"
        assert await staying.receive() == "still here?", "the open socket got it"


async def test_a_connection_gone_before_its_close_event_raises_nothing(hall: td.Stub) -> None:
    async with open_websocket(hall) as staying, open_websocket(hall):

        async def drop_then_broadcast(instance: Hall, ctx: td.ObjectContext) -> int:
            _, dropped = ctx.get_websockets()
            transport = socket_transport(dropped)
            assert transport is not None
            transport.abort()  # the connection is gone; its close event is not run yet
            assert dropped.ready_state == td.WebSocket.OPEN, "the object has not heard of it"
            return await ctx.broadcast("after the drop")

        assert await run_in_object(hall, drop_then_broadcast) == 1, "the dropped one is not counted"
        assert await staying.receive() == "after the drop", "the other still got it"


async def test_bad_arguments_are_type_errors(hall: td.Stub) -> None:
    async with open_websocket(hall):
        with pytest.raises(TypeError, match="str .text. or bytes"):
            await broadcast(hall, 42)
        with pytest.raises(TypeError, match="tag must be a str"):
            await broadcast(hall, "x", tag=["a"])
        with pytest.raises(TypeError, match="exclude takes WebSockets"):
            await broadcast(hall, "x", exclude=["not a socket"])


async def test_a_broadcast_after_a_write_waits_for_the_commit(
    tmp_path: Path, autojump_clock: Any
) -> None:
    backend = GatedBackend(tmp_path)
    async with td.open_runtime({"halls": Hall}, backend=backend) as runtime:
        stub = runtime.namespace("halls").get_by_name("main")
        async with open_websocket(stub) as client:
            backend.gate = trio.Event()
            before = backend.commits_started

            async def write_then_broadcast(instance: Hall, ctx: td.ObjectContext) -> int:
                await ctx.storage.put("news", 1)
                return await ctx.broadcast("news committed")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_in_object, stub, write_then_broadcast)
                assert await nothing_arrives(client), "nothing leaves before the commit"
                assert backend.commits_started == before + 1, "the commit is in progress"
                backend.gate.set()
                assert await client.receive() == "news committed", "it leaves once committed"


async def test_hub_broadcast_to_a_hibernated_object_does_not_wake_it(
    runtime_factory: Callable[..., Any],
) -> None:
    async with runtime_factory(objects={"halls": Hall}) as runtime:
        stub = runtime.namespace("halls").get_by_name("main")
        async with open_websocket(stub) as a, open_websocket(stub) as b:
            assert await evict(stub) is True, "it was live"
            activations = runtime.statistics().activations
            key = (stub.id.namespace, stub.id.hex)
            assert runtime.sockets.broadcast(key, "from outside") == 2
            assert [await a.receive(), await b.receive()] == ["from outside"] * 2, "both got it"
            assert runtime.statistics().activations == activations, "nothing was activated"
            assert runtime.statistics().live_objects == 0, "the object stays hibernated"


# ------------------------------------------------------ over real sockets


async def worker(request: td.Request, runtime: td.Runtime) -> td.Response:
    return await runtime.namespace("halls").get_by_name("main").fetch(request)


@pytest.fixture
async def served() -> AsyncIterator[tuple[td.Runtime, str]]:
    async with (
        td.open_runtime(objects={"halls": Hall}) as runtime,
        trio.open_nursery() as nursery,
    ):
        serve = functools.partial(td.serve, runtime, worker, host="127.0.0.1", port=0, park_after=0)
        port = await nursery.start(serve)
        yield runtime, f"ws://127.0.0.1:{port}/"
        nursery.cancel_scope.cancel()


def connect(url: str) -> Any:
    return websockets.sync.client.connect(
        url, open_timeout=10, close_timeout=2, proxy=None, legacy=True
    )


async def test_a_broadcast_serializes_once_and_wakes_no_parked_connection(
    served: tuple[td.Runtime, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, url = served
    stub = runtime.namespace("halls").get_by_name("main")
    clients = [await trio.to_thread.run_sync(connect, url) for _ in range(4)]
    try:
        ends = await sockets_of(stub)
        await eventually(lambda: runtime.statistics().connections_parked == 4)
        frames: list[bytes] = []
        real = _network.serialize_message

        def counting(message: str | bytes) -> bytes:
            frames.append(real(message))
            return frames[-1]

        monkeypatch.setattr(_network, "serialize_message", counting)
        text = "x" * 300  # a 16-bit length header: the frame is built by hand, not copied
        assert await broadcast(stub, text) == 4, "to the four sockets"
        assert len(frames) == 4 and all(frame is frames[0] for frame in frames), (
            f"the four sockets got one frame built once, not {len({id(f) for f in frames})}"
        )
        transports = [socket_transport(end) for end in ends]
        parked = [isinstance(t, _network.NetworkTransport) and t.is_parked for t in transports]
        assert all(parked), "no parked connection was woken"
        for client in clients:
            assert await trio.to_thread.run_sync(client.recv, 10) == text, "each client got it"
    finally:
        for client in clients:
            await trio.to_thread.run_sync(client.close)
