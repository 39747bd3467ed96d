"""``serve()``: HTTP/1.1 on a real socket, and WebSocket upgrades to real objects.

HTTP clients are h11 (an independent implementation) or raw bytes; the
WebSocket client is the ``websockets`` library's sync client in a thread.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
from websockets.frames import Opcode
from websockets.sync.client import ClientConnection, connect

from ..polling import eventually
from . import app
from .helpers import PATIENCE, HttpClient, client_frame, random_key, raw_exchange

StartServer = Callable[..., Awaitable[int]]


async def get(port: int, path: str, **options: Any) -> tuple[int, dict[str, str], bytes]:
    with trio.fail_after(PATIENCE):
        client = await HttpClient.connect(port)
        try:
            return await client.request("GET", path, **options)
        finally:
            await client.aclose()


# ------------------------------------------------------------------------ HTTP


async def test_get_reaches_the_worker(start_server: StartServer) -> None:
    port = await start_server()
    status, headers, body = await get(port, "/hello?name=ada")
    assert (status, body) == (200, b"hello ada"), (status, body)
    assert headers["content-type"] == "text/plain; charset=utf-8", headers


async def test_post_body_round_trip(start_server: StartServer) -> None:
    port = await start_server()
    client = await HttpClient.connect(port)
    status, headers, body = await client.request("POST", "/echo", body=b"x" * 100_000)
    await client.aclose()
    assert (status, len(body)) == (200, 100_000), (status, len(body))
    assert headers["x-method"] == "POST" and headers["x-client-host"] == "127.0.0.1", headers


async def test_request_url_uses_the_host_header(start_server: StartServer) -> None:
    port = await start_server()
    _status, _headers, body = await get(port, "/url?q=1")
    assert body == b"http://example.test/url?q=1", body


async def test_keep_alive_serves_two_requests_on_one_connection(start_server: StartServer) -> None:
    port = await start_server()
    client = await HttpClient.connect(port)
    with trio.fail_after(PATIENCE):
        first = await client.request("GET", "/hello?name=one")
        second = await client.request("GET", "/hello?name=two")
    await client.aclose()
    assert (first[2], second[2]) == (b"hello one", b"hello two"), (first, second)


async def test_unknown_route_gets_what_the_worker_says(start_server: StartServer) -> None:
    port = await start_server()
    status, _headers, body = await get(port, "/nowhere")
    assert (status, body) == (404, b"no such page"), (status, body)


async def test_garbage_gets_400(start_server: StartServer) -> None:
    port = await start_server()
    answer = await raw_exchange(port, b"THIS IS NOT HTTP\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 "), answer


async def test_huge_headers_get_431(start_server: StartServer) -> None:
    port = await start_server(max_header_bytes=4096)
    head = b"GET / HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 8000 + b"\r\n\r\n"
    answer = await raw_exchange(port, head)
    assert answer.startswith(b"HTTP/1.1 431 "), answer
    assert b"4,096" in answer, "the answer names the limit"


async def test_huge_body_gets_413(start_server: StartServer) -> None:
    port = await start_server(max_body_bytes=1000)
    answer = await raw_exchange(
        port, b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5000\r\n\r\n" + b"a" * 5000
    )
    assert answer.startswith(b"HTTP/1.1 413 "), answer


async def test_huge_chunked_body_gets_413(start_server: StartServer) -> None:
    port = await start_server(max_body_bytes=1000)
    chunk = b"%x\r\n%s\r\n" % (800, b"a" * 800)
    answer = await raw_exchange(
        port,
        b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n" + chunk * 2,
    )
    assert answer.startswith(b"HTTP/1.1 413 "), answer


async def test_silent_client_is_dropped_while_others_are_served(
    start_server: StartServer, autojump_clock: trio.testing.MockClock
) -> None:
    # Trio's clock: the handshake timeout is a Trio deadline, and every
    # client here is a Trio stream, so the window below is exact, not a race.
    port = await start_server(handshake_timeout=0.2)
    silent = await trio.open_tcp_stream("127.0.0.1", port)
    await silent.send_all(b"GET / HTTP/1.1\r\n")  # and never the rest
    start = trio.current_time()
    status, _headers, _body = await get(port, "/hello")
    assert status == 200, "another client is served meanwhile"
    with trio.fail_after(1):
        assert await silent.receive_some() == b"", "dropped without an answer"
    waited = trio.current_time() - start
    assert 0.15 < waited < 0.8, f"dropped after {waited:.3f} s; the timeout is 0.2 s"
    await silent.aclose()


async def test_worker_exception_gives_500_and_the_connection_lives_on(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    port = await start_server()
    client = await HttpClient.connect(port)
    with caplog.at_level(logging.ERROR, logger="trio_durable.gateway"):
        status, _headers, _body = await client.request("GET", "/boom")
    assert status == 500, status
    assert "the worker broke" in caplog.text, "the failure is logged"
    status, _headers, body = await client.request("GET", "/hello?name=again")
    assert (status, body) == (200, b"hello again"), (status, body)
    await client.aclose()


async def test_non_response_gives_500(start_server: StartServer) -> None:
    port = await start_server()
    status, _headers, _body = await get(port, "/not-a-response")
    assert status == 500, status


async def test_over_the_connection_cap_gets_503(start_server: StartServer) -> None:
    port = await start_server(max_connections=1)
    holder = await HttpClient.connect(port)
    assert (await holder.request("GET", "/hello"))[0] == 200  # the one allowed connection
    answer = await raw_exchange(port, b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 503 "), answer
    assert (await holder.request("GET", "/hello"))[0] == 200, "the holder is not disturbed"
    await holder.aclose()


# ------------------------------------------------------------------ WebSocket


async def ws_connect(port: int, path: str, **options: Any) -> ClientConnection:
    options = {
        "ping_interval": None,
        "close_timeout": 0.5,
        "proxy": None,
        "legacy": True,
        **options,
    }
    with trio.fail_after(PATIENCE):
        return await trio.to_thread.run_sync(
            lambda: connect(f"ws://127.0.0.1:{port}{path}", **options)
        )


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    with trio.fail_after(PATIENCE):
        return await trio.to_thread.run_sync(fn, *args)


async def test_websocket_echo_through_an_object(start_server: StartServer) -> None:
    port = await start_server()
    client = await ws_connect(port, "/rooms/lobby", subprotocols=["chat.v1"])
    try:
        assert client.subprotocol == "chat.v1", client.subprotocol
        assert await in_thread(client.recv, 1) == "welcome", "sent before the 101; arrives after"
        await in_thread(client.send, "hi")
        assert await in_thread(client.recv, 1) == "hi"
        await in_thread(client.send, b"\x01\x02")
        assert await in_thread(client.recv, 1) == b"\x01\x02"
    finally:
        await in_thread(client.close)


async def test_websocket_close_reaches_the_object(start_server: StartServer) -> None:
    port = await start_server()
    client = await ws_connect(port, "/rooms/closing")
    assert await in_thread(client.recv, 1) == "welcome"
    await in_thread(client.close, 4321, "leaving")
    await eventually(lambda: bool(app.closes))
    assert app.closes == [("closing", 4321, "leaving", True)], app.closes


async def test_object_closes_the_websocket(start_server: StartServer) -> None:
    port = await start_server()
    client = await ws_connect(port, "/rooms/bye")
    assert await in_thread(client.recv, 1) == "welcome"
    await in_thread(client.send, "close me")
    await in_thread(client.wait_closed)
    assert (client.close_code, client.close_reason) == (4000, "as you wish")


async def test_bytes_after_the_handshake_reach_the_object(start_server: StartServer) -> None:
    port = await start_server()
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    head = (
        "GET /rooms/eager HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {random_key()}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    # The first message travels in the same packet as the request head.
    await stream.send_all(head + client_frame(Opcode.TEXT, b"right away"))
    received = b""
    with trio.fail_after(PATIENCE):
        while received.count(b"right away") == 0:
            received += await stream.receive_some()
    assert received.startswith(b"HTTP/1.1 101 "), received
    assert received.index(b"welcome") < received.index(b"right away"), received
    await stream.aclose()


async def upgrade_answer(
    port: int, path: str, version: str = "13", key: str | None = None
) -> bytes:
    key = random_key() if key is None else key
    head = (
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    return await raw_exchange(port, head)


async def test_wrong_websocket_version_gets_426(start_server: StartServer) -> None:
    port = await start_server()
    answer = await upgrade_answer(port, "/rooms/old", version="8")
    assert answer.startswith(b"HTTP/1.1 426 "), answer
    assert b"sec-websocket-version: 13" in answer.lower(), answer


async def test_missing_websocket_key_gets_400(start_server: StartServer) -> None:
    port = await start_server()
    answer = await upgrade_answer(port, "/rooms/nokey", key="short")
    assert answer.startswith(b"HTTP/1.1 400 "), answer


async def test_worker_failure_on_upgrade_gets_500_not_101(start_server: StartServer) -> None:
    port = await start_server()
    answer = await upgrade_answer(port, "/rooms/x?fail=1")
    assert answer.startswith(b"HTTP/1.1 500 "), answer


async def test_101_without_a_websocket_pair_gets_500(start_server: StartServer) -> None:
    port = await start_server()
    answer = await upgrade_answer(port, "/fake-101")
    assert answer.startswith(b"HTTP/1.1 500 "), answer


async def test_101_for_a_plain_request_gets_500(start_server: StartServer) -> None:
    port = await start_server()
    status, _headers, _body = await get(port, "/rooms/plain")
    assert status == 500, status


async def test_protocol_violation_closes_with_1002(start_server: StartServer) -> None:
    port = await start_server()
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    head = (
        "GET /rooms/rude HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {random_key()}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    unmasked = b"\x81\x02hi"  # clients must mask their frames
    await stream.send_all(head + unmasked)
    received = b""
    with trio.fail_after(PATIENCE):
        while chunk := await stream.receive_some():
            received += chunk
    assert b"\x88" in received, received
    close = received[received.rindex(b"\x88") :]
    assert close[2:4] == (1002).to_bytes(2, "big"), close
    await stream.aclose()
