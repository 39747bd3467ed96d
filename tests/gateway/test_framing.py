"""Request framing that could smuggle a request, and protocol versions we do not speak.

RFC 9112 section 6.1: a request with both Content-Length and
Transfer-Encoding is refused and its connection closed, so bytes one hop
reads as a body can never be answered here as a second request. Clients
send raw bytes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

import trio_durable as td

from . import app
from .helpers import random_key, raw_exchange

StartServer = Callable[..., Awaitable[int]]

#: Paths the worker was asked for.
seen: list[str] = []


async def recording_worker(request: td.Request, runtime: Any) -> td.Response:
    seen.append(request.path)
    return await app.worker(request, runtime)


@pytest.fixture
async def port(start_server: StartServer) -> int:
    seen.clear()
    return await start_server(worker=recording_worker, handshake_timeout=10.0)


SMUGGLED = b"GET /hello?name=smuggled HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n",
    ],
)
async def test_content_length_with_transfer_encoding_gets_400_and_closes(
    port: int, framing: bytes
) -> None:
    request = b"POST /echo HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n0\r\n\r\n"
    answer = await raw_exchange(port, request + SMUGGLED)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert answer.count(b"HTTP/1.1 ") == 1, f"the pipelined request was answered: {answer!r}"
    assert b"smuggled" not in answer and seen == [], f"the worker saw {seen}"


async def test_transfer_encoding_on_http_1_0_gets_400(port: int) -> None:
    # RFC 9112 section 6.1: HTTP/1.0 framing with Transfer-Encoding is faulty.
    request = b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    answer = await raw_exchange(port, request + SMUGGLED)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert answer.count(b"HTTP/1.1 ") == 1 and seen == [], (answer, seen)


async def test_chunk_data_not_followed_by_crlf_gets_400(port: int) -> None:
    # h11 before 0.16 skipped the two bytes after chunk data unchecked
    # (CVE-2025-43859): "XX" would pass, and a proxy that reads the body
    # differently could smuggle a request. ChunkSizeWatch skips them too,
    # relying on h11 to check them (hence h11>=0.16).
    body = b"5\r\nhelloXX0\r\n\r\n"
    request = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    answer = await raw_exchange(port, request + SMUGGLED)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert answer.count(b"HTTP/1.1 ") == 1 and seen == [], (answer, seen)


@pytest.mark.parametrize("version", [b"9.9", b"2.0", b"0.9", b"3.1"])
async def test_unsupported_http_version_gets_505(port: int, version: bytes) -> None:
    answer = await raw_exchange(port, b"GET /hello HTTP/" + version + b"\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 505 "), answer
    assert seen == [], f"the worker must not run for HTTP/{version.decode()}: it saw {seen}"


async def test_higher_minor_version_is_served_as_http_1_1(port: int) -> None:
    # RFC 9110 section 2.5: HTTP/1.2 is HTTP/1.1 to us, not an error.
    answer = await raw_exchange(
        port, b"GET /hello HTTP/1.2\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 200 "), answer


async def test_http_1_0_websocket_upgrade_gets_400_before_the_worker(port: int) -> None:
    head = (
        "GET /rooms/old HTTP/1.0\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {random_key()}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    answer = await raw_exchange(port, head)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert b"HTTP/1.1" in answer.partition(b"\r\n\r\n")[2], "the answer says what is needed"
    assert seen == [], f"the worker must not run: it saw {seen}"


@pytest.mark.parametrize("size", [b"ffffffffffffffffff1", b"8000000000000000", b"f" * 20])
async def test_absurd_chunk_size_gets_400_at_once(
    port: int, size: bytes, autojump_clock: trio.testing.MockClock
) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + size + b"\r\n"
        )
        start = trio.current_time()
        answer = await stream.receive_some()
        waited = trio.current_time() - start
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert waited < 1.0, f"answered after {waited:.1f} s (Trio time), not at once"
    assert seen == [], f"the worker must not run: it saw {seen}"


@pytest.mark.parametrize(
    "body",
    [b"5\nhello\n0\n\n", b"f" * 30, b"0" * 25 + b"1"],
    ids=["bare LF", "30 digits, no line end", "25 digits, no line end"],
)
async def test_chunked_body_h11_would_wait_on_gets_400_at_once(
    start_server: StartServer, body: bytes, autojump_clock: trio.testing.MockClock
) -> None:
    port = await start_server(handshake_timeout=60.0)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body
        )
        start = trio.current_time()
        answer = await stream.receive_some()
        waited = trio.current_time() - start
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert waited < 1.0, f"answered after {waited:.1f} s (Trio time), not at once"


@pytest.mark.parametrize("size", [b"3e9", b"100000000", b"7fffffffffffffff"])
async def test_chunk_size_over_the_body_limit_gets_413_at_once(
    start_server: StartServer, size: bytes, autojump_clock: trio.testing.MockClock
) -> None:
    port = await start_server(handshake_timeout=10.0, max_body_bytes=1000)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + size + b"\r\n"
        )
        start = trio.current_time()
        answer = await stream.receive_some()
        waited = trio.current_time() - start
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    named = f"{int(size, 16):,}".encode()
    assert named in answer and b"1,000" in answer, f"names the size and the limit: {answer!r}"
    assert waited < 1.0, f"answered after {waited:.1f} s (Trio time), not at once"


async def test_chunk_sizes_adding_up_over_the_limit_get_413_before_the_data(
    start_server: StartServer, autojump_clock: trio.testing.MockClock
) -> None:
    port = await start_server(handshake_timeout=10.0, max_body_bytes=1000)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"1f4\r\n"
            + b"a" * 500
            + b"\r\n1f5\r\n"
        )
        answer = await stream.receive_some()
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    assert b"1,001" in answer, f"names the declared size: {answer!r}"


async def test_chunked_body_within_the_limit_is_served(
    start_server: StartServer,
) -> None:
    port = await start_server(max_body_bytes=1000)
    body = b"3e8\r\n" + b"a" * 1000 + b"\r\n0\r\n\r\n"
    answer = await raw_exchange(
        port,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n" + body,
    )
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert answer.endswith(b"a" * 1000), answer[-50:]


async def test_chunk_extensions_and_trailers_are_accepted(start_server: StartServer) -> None:
    port = await start_server(max_body_bytes=1000)
    body = b'5;name=value\r\nhello\r\n6;x="y"\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n'
    answer = await raw_exchange(
        port,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n" + body,
    )
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert answer.endswith(b"hello world"), answer[-50:]
