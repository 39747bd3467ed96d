"""The network transport on real sockets, checked with independent clients.

A :class:`~tests.gateway.conftest.Harness` does the opening handshake by
hand and starts a :class:`NetworkTransport` with a recording sink; clients
are the ``websockets`` library's sync client (in a thread) or raw sockets.
Tests with a ``websockets`` client use Trio's real clock: the client runs in
a thread, and a mock clock would jump while Trio waits for it. Time-outs are
a few hundredths of a second, so every test stays well under one second,
and no real-clock test asserts how long something took. The one that does
(the close timeout) uses a raw client without threads and ``autojump_clock``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trio
from websockets.exceptions import ConnectionClosed
from websockets.frames import Opcode
from websockets.sync.client import ClientConnection, connect

from trio_durable._exceptions import WebSocketProtocolError
from trio_durable._limits import CloseCode
from trio_durable._websocket._home import ConnectionHome
from trio_durable._websocket._network import NetworkTransport
from trio_durable._websocket._parking import SocketParking
from trio_durable._websocket._transport import DISCONNECTED_REASON

from ..polling import eventually
from .conftest import Harness
from .helpers import (
    PATIENCE,
    FakeSink,
    client_frame,
    masked_close,
    read_server_frame,
    read_until_eof,
)

WsClient = tuple[ClientConnection, NetworkTransport, FakeSink]


@pytest.fixture
async def home(harness: Harness) -> ConnectionHome:
    return await harness.home(park_after=0.05, close_timeout=0.2)


@pytest.fixture
async def ws_client(harness: Harness) -> AsyncIterator[Callable[..., Any]]:
    """``await ws_client(home)`` → a websockets sync client with its transport and sink."""
    clients: list[ClientConnection] = []

    async def open_client(home: ConnectionHome, **options: Any) -> WsClient:
        options = {
            "ping_interval": None,
            "close_timeout": 0.5,
            "proxy": None,
            "legacy": True,
            **options,
        }
        box: list[ClientConnection] = []

        async def run_client() -> None:
            box.append(await trio.to_thread.run_sync(lambda: connect(harness.url, **options)))

        with trio.fail_after(PATIENCE):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_client)
                transport, sink = await harness.accept(home)
        clients.append(box[0])
        return box[0], transport, sink

    yield open_client
    for client in clients:
        await trio.to_thread.run_sync(client.close_socket)


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    with trio.fail_after(PATIENCE):
        return await trio.to_thread.run_sync(fn, *args)


# ------------------------------------------------------------------ messages


async def test_text_and_binary_from_client_reach_the_sink(home, ws_client) -> None:
    client, _transport, sink = await ws_client(home)
    await in_thread(client.send, "hello")
    await in_thread(client.send, b"\x00\x01")
    events = await sink.wait_for(2)
    assert events == [("message", "hello"), ("message", b"\x00\x01")], events


async def test_text_and_binary_to_client(home, ws_client) -> None:
    client, transport, _sink = await ws_client(home)
    transport.send_message("héllo")
    transport.send_message(b"\xff\x00")
    received = [await in_thread(client.recv, 1), await in_thread(client.recv, 1)]
    assert received == ["héllo", b"\xff\x00"], received


async def test_many_large_messages_keep_their_order(home, ws_client) -> None:
    client, transport, _sink = await ws_client(home, max_size=None, max_queue=None)
    payloads = [bytes([i % 256]) * 100_000 for i in range(30)]  # 3 MB: more than the kernel takes
    for payload in payloads[:10]:
        transport.send_message(payload)
    received = [await in_thread(client.recv, 2) for _ in range(10)]
    assert received == payloads[:10], "messages arrived out of order or damaged"


async def test_ping_is_answered_without_reaching_the_sink(home, ws_client) -> None:
    client, _transport, sink = await ws_client(home)
    pong = await in_thread(client.ping, b"are you there")
    assert await in_thread(pong.wait, 1), "no pong came back"
    await in_thread(client.send, "after")
    assert await sink.wait_for(1) == [("message", "after")], sink.events


# ------------------------------------------------------------------- closing


async def test_peer_close_is_answered_and_reported_clean(home, ws_client) -> None:
    client, transport, sink = await ws_client(home)
    await in_thread(client.close, 4000, "bye")
    assert await sink.wait_for(1) == [("close", 4000, "bye", True)], sink.events
    assert client.close_code == 4000, "the server did not echo the close code"
    assert not transport.is_open


async def test_empty_close_gives_1005(home, harness: Harness) -> None:
    client, _transport, sink = await harness.raw_client(home)
    client.sendall(masked_close())
    assert await sink.wait_for(1) == [("close", 1005, "", True)], sink.events
    opcode, payload = await in_thread(read_server_frame, client)
    assert (opcode, payload) == (Opcode.CLOSE, b""), "an empty Close is answered with an empty one"


async def test_tcp_drop_gives_1006(home, harness: Harness) -> None:
    client, _transport, sink = await harness.raw_client(home)
    client.close()
    assert await sink.wait_for(1) == [("close", 1006, DISCONNECTED_REASON, False)], sink.events


async def test_invalid_utf8_closes_with_1007_and_reports_an_error(home, harness: Harness) -> None:
    client, _transport, sink = await harness.raw_client(home)
    client.sendall(client_frame(Opcode.TEXT, b"\xff\xfe"))
    events = await sink.wait_for(1)
    assert events[0][0] == "error", events
    error = events[0][1]
    assert isinstance(error, WebSocketProtocolError) and error.code == 1007, error
    opcode, payload = await in_thread(read_server_frame, client)
    assert opcode == Opcode.CLOSE and payload[:2] == b"\x03\xef", payload  # 1007


async def test_oversized_message_closes_with_1009(harness: Harness) -> None:
    home = await harness.home(max_message_size=1000)
    client, _transport, sink = await harness.raw_client(home)
    client.sendall(client_frame(Opcode.BINARY, b"x" * 1001))
    events = await sink.wait_for(1)
    assert events[0][0] == "error" and events[0][1].code == 1009, events
    opcode, payload = await in_thread(read_server_frame, client)
    assert opcode == Opcode.CLOSE and payload[:2] == b"\x03\xf1", payload  # 1009


async def test_send_close_waits_for_the_reply(home, ws_client) -> None:
    client, transport, sink = await ws_client(home)
    transport.send_close(4001, "done")
    with pytest.raises(ConnectionClosed):
        await in_thread(client.recv, 1)
    assert await sink.wait_for(1) == [("close", 4001, "done", True)], sink.events
    assert client.close_code == 4001, client.close_code


async def test_send_close_without_reply_times_out_as_1006(
    home, harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    client, transport, sink = await harness.raw_client(home)  # reads nothing, answers nothing
    start = trio.current_time()
    transport.send_close(1000, "")
    assert await sink.wait_for(1) == [("close", 1006, DISCONNECTED_REASON, False)], sink.events
    waited = trio.current_time() - start
    assert 0.15 < waited < 1.0, f"gave up after {waited:.3f} s; the close timeout is 0.2 s"


async def test_send_after_close_is_refused(home, ws_client) -> None:
    _client, transport, _sink = await ws_client(home)
    transport.send_close(1000, "")
    with pytest.raises(trio.ClosedResourceError):
        transport.send_message("late")


async def test_abort_drops_the_connection_and_reports_1006(home, harness: Harness) -> None:
    client, transport, sink = await harness.raw_client(home)
    transport.abort()
    transport.abort()
    assert await sink.wait_for(1) == [("close", 1006, DISCONNECTED_REASON, False)], sink.events
    assert await in_thread(read_until_eof, client) == b"", "no Close frame is sent on abort"
    await trio.testing.wait_all_tasks_blocked()
    assert len(sink.terminal_events) == 1, sink.events


async def test_initial_bytes_after_the_handshake_are_parsed(home, harness: Harness) -> None:
    _client, _transport, sink = await harness.raw_client(
        home, extra=client_frame(Opcode.TEXT, b"early")
    )
    assert await sink.wait_for(1) == [("message", "early")], sink.events


# ------------------------------------------------------------------- parking


async def test_idle_connection_is_parked_and_wakes_on_a_message(home, ws_client, parking) -> None:
    client, transport, sink = await ws_client(home)
    await in_thread(client.send, "one")
    await sink.wait_for(1)
    await eventually(lambda: transport.is_parked)
    assert not transport.has_reader, "a parked connection keeps no reader task"
    assert transport._fd in parking._callbacks, "the parking table holds the socket"
    assert transport._reader is None and transport.buffered == 0
    await in_thread(client.send, "two")
    assert await sink.wait_for(2) == [("message", "one"), ("message", "two")], sink.events
    await eventually(lambda: transport.is_parked)


async def test_parked_connection_can_be_sent_to_without_waking(home, ws_client) -> None:
    client, transport, _sink = await ws_client(home)
    await eventually(lambda: transport.is_parked)
    transport.send_message("to a parked socket")
    assert transport.is_parked and not transport.has_reader
    assert await in_thread(client.recv, 1) == "to a parked socket"


async def test_parked_connection_notices_a_tcp_drop(home, harness: Harness) -> None:
    client, transport, sink = await harness.raw_client(home)
    await eventually(lambda: transport.is_parked)
    client.close()
    assert await sink.wait_for(1) == [("close", 1006, DISCONNECTED_REASON, False)], sink.events
    assert transport._fd not in harness.parking._callbacks


# --------------------------------------------------------------- slow clients


async def test_client_that_never_reads_is_disconnected(harness: Harness, ws_client) -> None:
    home = await harness.home(park_after=0.05, send_buffer_limit=64 * 1024)
    stuck, stuck_transport, stuck_sink = await harness.raw_client(home, small_buffers=True)
    reader, reader_transport, _ = await ws_client(home)
    message = "x" * 1024
    sent = 0
    with trio.fail_after(PATIENCE):
        while stuck_transport.is_open:
            # A broadcast: it never waits, whatever the slow client does.
            stuck_transport.send_message(message)
            reader_transport.send_message(message)
            sent += 1
            if sent % 64 == 0:
                for _ in range(64):
                    assert await in_thread(reader.recv, 1) == message
                await trio.lowlevel.checkpoint()
    assert await stuck_sink.wait_for(1) == [("close", 1006, DISCONNECTED_REASON, False)]
    assert stuck_transport.buffered == 0, "the dropped client's buffer was freed"
    reader_transport.send_message("still here")
    while (got := await in_thread(reader.recv, 1)) == message:
        pass
    assert got == "still here"
    # What the stuck client gets, if it ever reads: frames, then maybe the Close 1013.
    stuck.setblocking(True)
    data = await in_thread(read_until_eof, stuck)
    assert len(data) >= 1024, "the stuck client had received some data before"
    if b"\x88" in data[-40:]:
        assert CloseCode.TRY_AGAIN_LATER.to_bytes(2, "big") in data[-40:]


async def test_shutdown_closes_parked_connections_with_1001(
    harness: Harness, parking: SocketParking
) -> None:
    async with trio.open_nursery() as connection_nursery:
        home = ConnectionHome(connection_nursery, parking, park_after=0.05)
        await connection_nursery.start(home.run)
        client, transport, sink = await harness.raw_client(home)
        await eventually(lambda: transport.is_parked)
        connection_nursery.cancel_scope.cancel()
    opcode, payload = await in_thread(read_server_frame, client)
    assert (opcode, payload[:2]) == (Opcode.CLOSE, (1001).to_bytes(2, "big")), payload
    assert len(home) == 0 and transport._sock is None, "the socket was closed"
    assert sink.events == [], "nobody is told during shutdown"
