"""trio-websocket at the edges: outbound sockets and handing over connections."""

from __future__ import annotations

from functools import partial

import attrs
import pytest
import trio
import trio.testing
import trio_websocket
import websockets.exceptions
import websockets.frames
import websockets.sync.client

import trio_durable as td
from trio_durable.testing import evict

from ..polling import PATIENCE, eventually
from .objects import Room, constructed


async def _echo_handler(request: trio_websocket.WebSocketRequest) -> None:
    connection = await request.accept()
    try:
        while True:
            message = await connection.get_message()
            if message == "close please":
                await connection.aclose(4002, "as you wish")
                return
            await connection.send_message(f"echo {message}")
    except trio_websocket.ConnectionClosed:
        pass


@pytest.fixture
async def echo_url(nursery: trio.Nursery) -> str:
    server = await nursery.start(
        partial(trio_websocket.serve_websocket, _echo_handler, "127.0.0.1", 0, ssl_context=None)
    )
    return f"ws://127.0.0.1:{server.port}/"


@attrs.define(eq=False)
class Client(td.DurableObject):
    replies: list[str] = attrs.field(factory=list)
    socket: td.WebSocket | None = None
    #: Set when the outbound socket kept open has closed (its listener ended).
    closed: trio.Event = attrs.field(factory=trio.Event)

    async def round_trip(self, url: str, text: str) -> str:
        ws = await td.connect_websocket(url)
        await ws.send(text)
        reply = await ws.receive()
        await ws.close()
        return str(reply)

    async def keep_open(self, url: str) -> None:
        self.socket = await td.connect_websocket(url)

        async def listen() -> None:
            assert self.socket is not None
            async for message in self.socket:
                self.replies.append(str(message))
            self.closed.set()

        self.ctx.wait_until(listen)

    async def wait_closed(self) -> None:
        await self.closed.wait()

    async def say(self, text: str) -> None:
        assert self.socket is not None
        await self.socket.send(text)

    async def state(self) -> tuple[list[str], int | None, int | None]:
        assert self.socket is not None
        return self.replies, self.socket.ready_state, self.socket.close_code


async def test_outbound_round_trip_from_an_object(echo_url: str) -> None:
    async with td.open_runtime(objects={"clients": Client}) as rt:
        stub = rt.namespace("clients").get_by_name("c")
        assert await stub.round_trip(echo_url, "hi") == "echo hi"


async def test_outbound_socket_pins_the_object_until_it_closes(echo_url: str) -> None:
    async with td.open_runtime(objects={"clients": Client}, hibernate_after=0.05) as rt:
        stub = rt.namespace("clients").get_by_name("c")
        await stub.keep_open(echo_url)
        await stub.say("one")
        await trio.sleep(0.3)
        assert rt.statistics().evictions == 0, "an open outbound socket prevents hibernation"
        await stub.say("close please")
        await eventually(lambda: rt.statistics().evictions > 0)
        # The instance that held the socket is gone; what it saw was recorded before.


async def test_outbound_close_code_from_the_server_is_seen(echo_url: str) -> None:
    async with td.open_runtime(objects={"clients": Client}) as rt:
        stub = rt.namespace("clients").get_by_name("c")
        await stub.keep_open(echo_url)
        await stub.say("one")
        await stub.say("close please")
        with trio.fail_after(PATIENCE):
            await stub.wait_closed()
        replies, state, code = await stub.state()
    assert (replies, state, code) == (["echo one"], td.WebSocket.CLOSED, 4002)


async def test_hand_over_a_trio_websocket_connection_to_a_hibernatable_object(
    nursery: trio.Nursery,
) -> None:
    async with td.open_runtime(objects={"rooms": Room}) as rt:
        stub = rt.namespace("rooms").get_by_name("r")

        async def handler(request: trio_websocket.WebSocketRequest) -> None:
            await td.hand_over_websocket(request, stub)

        server = await nursery.start(
            partial(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, ssl_context=None)
        )
        url = f"ws://127.0.0.1:{server.port}/room?name=ann"
        async with trio_websocket.open_websocket_url(url) as ws:
            await ws.send_message("whoami")
            assert await ws.get_message() == "ann seen=1 tags=['room']"
            await evict(stub)
            await ws.send_message("whoami")
            assert await ws.get_message() == "ann seen=1 tags=['room']", (
                "a fresh instance answered on the same connection"
            )
        assert constructed["Room"] == 2


async def test_hand_over_rejects_with_the_objects_status(nursery: trio.Nursery) -> None:
    async def refuse(request: td.Request) -> td.Response:
        return td.Response.text("go away", status=403)

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        await td.hand_over_websocket(request, refuse)

    async with td.open_runtime(objects={"rooms": Room}):
        server = await nursery.start(
            partial(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, ssl_context=None)
        )
        # The independent `websockets` client: trio-websocket's own client
        # leaks its socket when a handshake is rejected.
        url = f"ws://127.0.0.1:{server.port}/"
        with pytest.raises(websockets.exceptions.InvalidStatus) as info:
            await trio.to_thread.run_sync(_connect_sync, url)
    assert info.value.response.status_code == 403
    assert info.value.response.body == b"go away"


def _connect_sync(url: str) -> None:
    with websockets.sync.client.connect(url, open_timeout=5):
        pass


async def test_hand_over_an_already_accepted_connection(nursery: trio.Nursery) -> None:
    async with td.open_runtime(objects={"rooms": Room}) as rt:
        stub = rt.namespace("rooms").get_by_name("r")

        async def handler(request: trio_websocket.WebSocketRequest) -> None:
            connection = await request.accept()  # an app that accepts first
            await td.hand_over_websocket(connection, stub)

        server = await nursery.start(
            partial(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, ssl_context=None)
        )
        url = f"ws://127.0.0.1:{server.port}/room?name=bea"
        async with trio_websocket.open_websocket_url(url) as ws:
            await ws.send_message("whoami")
            assert await ws.get_message() == "bea seen=1 tags=['room']"


async def test_hand_over_of_an_accepted_connection_refused_closes_1008(
    nursery: trio.Nursery,
) -> None:
    async def refuse(request: td.Request) -> td.Response:
        return td.Response.text("no", status=403)

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        await td.hand_over_websocket(await request.accept(), refuse)

    async with td.open_runtime(objects={"rooms": Room}):
        server = await nursery.start(
            partial(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, ssl_context=None)
        )
        # The `websockets` client: trio-websocket's own client leaks its
        # socket when the server closes first.
        url = f"ws://127.0.0.1:{server.port}/"
        closed = await trio.to_thread.run_sync(_receive_until_closed, url)
    assert closed is not None, "the server must send a Close frame"
    assert (closed.code, closed.reason) == (1008, "refused by the object: HTTP 403")


def _receive_until_closed(url: str) -> websockets.frames.Close | None:
    with (
        websockets.sync.client.connect(url, open_timeout=5) as ws,
        pytest.raises(websockets.exceptions.ConnectionClosed) as info,
    ):
        ws.recv(5)
    return info.value.rcvd
