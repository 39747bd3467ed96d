"""Nothing an app returns, and nothing that fails while answering, can stop the server.

Hypothesis forges responses an app might return (headers that are not
Latin-1 or hold CR/LF, statuses of the wrong type or range, bodies of the
wrong type, WebSocket 101 headers that are not ASCII), bypassing
``Response``'s own checks as a subclass or a careless ``object.__setattr__``
could. Each one is sent to a real server on 127.0.0.1 by a raw socket
client; the answer must be one well-formed HTTP response (the forged one,
or 500 when it cannot be sent: never silence, since every part is checked
before a byte is written), and the server must still answer a normal
request afterwards.
"""

from __future__ import annotations

import base64
import functools
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import attrs
import h11
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trio_durable as td
from trio_durable.testing import run_in_object

from .helpers import raw_exchange

StartServer = Callable[..., Awaitable[int]]

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)

#: The response the worker (or the object, for upgrades) returns next.
NEXT: dict[str, Any] = {}


def forge(status: Any, headers: Any, body: Any, web_socket: Any = None) -> td.Response:
    """A Response holding exactly these values, whatever they are."""
    response = td.Response()
    object.__setattr__(response, "status", status)
    object.__setattr__(response, "headers", headers)
    object.__setattr__(response, "body", body)
    object.__setattr__(response, "web_socket", web_socket)
    return response


async def forging_worker(request: td.Request, runtime: td.Runtime) -> td.Response:
    if request.path == "/normal":
        return td.Response.text("normal")
    if request.path.startswith("/upgrade/"):
        return await runtime.namespace("upgraders").get_by_name(request.path[9:]).fetch(request)
    return forge(**NEXT)  # type: ignore[no-any-return]


@attrs.define(eq=False)
class Upgrader(td.DurableObject):
    """Accepts the WebSocket and answers 101 with the forged headers."""

    async def fetch(self, request: td.Request) -> td.Response:
        client, server = td.WebSocketPair()
        self.ctx.accept_websocket(server)
        response = td.Response.websocket(client)
        object.__setattr__(response, "headers", NEXT["headers"])
        return response


@pytest.fixture
async def upgrade_runtime() -> AsyncIterator[td.Runtime]:
    async with td.open_runtime(objects={"upgraders": Upgrader}) as runtime:
        yield runtime


@pytest.fixture
async def port(nursery: trio.Nursery, upgrade_runtime: td.Runtime) -> int:
    NEXT.clear()
    port: int = await nursery.start(
        functools.partial(
            td.serve,
            upgrade_runtime,
            forging_worker,
            host="127.0.0.1",
            port=0,
            handshake_timeout=2.0,
        )
    )
    return port


# ------------------------------------------------------------------ strategies

header_names = (
    st.sampled_from(
        ["x-ok", "Content-Type", "content-length", "transfer-encoding", "connection", "set-cookie"]
    )
    | st.sampled_from(["", "bad name", "x\r\ninjected", "caf\xe9", "\u2603", "x:y", "\x00"])
    | st.text(max_size=12)
)
header_values = st.sampled_from(
    ["ok", "caf\xe9", "\u2603", "a\r\nb: c", "a\nb", "\x00", " padded ", "\x7f", "\ud800", "99"]
) | st.text(max_size=20)
header_lists = st.lists(st.tuples(header_names, header_values), max_size=4)
odd_headers = st.sampled_from(
    [None, 42, "x-a: b", [("only-a-name",)], [(b"bytes", b"value")], {"x": 1}, [("x", None)]]
)
statuses = st.integers(min_value=-2, max_value=1000) | st.sampled_from(
    ["200", 200.0, True, None, 101, 100, 199, 204, 304, 599, 600, 2**70]
)
bodies = (
    st.binary(max_size=64)
    | st.text(max_size=16)
    | st.sampled_from([None, 42, ["x"], bytearray(b"ab"), memoryview(b"cd"), object()])
)


def parse_answer(answer: bytes, method: bytes = b"GET") -> int:
    """Parse the answer with h11 as a client would; return its status.

    Fails unless it is exactly one well-formed response: no header split in
    two, no second response smuggled after the first.
    """
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(answer)
    client.receive_data(b"")
    status = 0
    while True:
        event = client.next_event()
        if isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.EndOfMessage):
            break
        elif event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
            raise AssertionError(f"the answer ended early: {answer!r}")
    rest, _closed = client.trailing_data
    assert rest == b"", f"bytes after the response: {rest!r}"
    return status


async def still_serves(port: int) -> None:
    answer = await raw_exchange(
        port, b"GET /normal HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"normal"), (
        f"the server no longer answers a normal request: {answer!r}"
    )


# ------------------------------------------------------------------ the tests


async def test_any_forged_response_gets_a_well_formed_answer_and_the_server_goes_on(
    port: int,
) -> None:
    @SETTINGS
    @given(status=statuses, headers=header_lists | odd_headers, body=bodies)
    def probe(status: Any, headers: Any, body: Any) -> None:
        NEXT.update(status=status, headers=headers, body=body)
        answer = trio.from_thread.run(
            raw_exchange, port, b"GET /forged HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        got = parse_answer(answer)  # fails on an empty answer too
        assert got in (status, 500), f"status {got} for a forged {status!r}: {answer!r}"
        trio.from_thread.run(still_serves, port)

    await trio.to_thread.run_sync(probe)


async def test_any_forged_101_headers_get_101_or_500_and_the_server_goes_on(port: int) -> None:
    rounds = 0

    @SETTINGS
    @given(headers=header_lists | odd_headers)
    def probe(headers: Any) -> None:
        nonlocal rounds
        rounds += 1
        NEXT.update(headers=headers)
        answer = trio.from_thread.run(read_head, port, upgrade(f"/upgrade/room{rounds}"))
        head = answer.partition(b"\r\n\r\n")[0]
        assert head.startswith((b"HTTP/1.1 101 ", b"HTTP/1.1 500 ")), answer
        assert b"\r\n\r\n" in answer, f"an unfinished head: {answer!r}"
        trio.from_thread.run(still_serves, port)

    await trio.to_thread.run_sync(probe)


async def read_head(port: int, data: bytes) -> bytes:
    """Send ``data``; return what arrives up to the end of the answer's head, or to EOF.

    An upgraded connection stays open, so this does not wait for the close.
    """
    with trio.fail_after(2):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(data)
            received = b""
            while b"\r\n\r\n" not in received:
                try:
                    chunk = await stream.receive_some()
                except trio.BrokenResourceError:
                    break
                if not chunk:
                    break
                received += chunk
            return received


def upgrade(path: str, extra: bytes = b"") -> bytes:
    key = base64.b64encode(os.urandom(16))
    return (
        b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
        b"Sec-WebSocket-Version: 13\r\n" + extra + b"\r\n"
    )


async def test_header_value_that_is_not_latin_1_gets_500(port: int) -> None:
    NEXT.update(status=200, headers=td.Headers([("x-name", "\u2603")]), body=b"ok")
    answer = await raw_exchange(
        port, b"GET /forged HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 500 "), answer
    await still_serves(port)


async def test_101_echoing_a_non_ascii_subprotocol_keeps_its_bytes(port: int) -> None:
    # An app that answers the subprotocol the client offered, as a chat app
    # might. Headers are Latin-1 both ways, so the bytes come back as sent.
    offered = "café".encode()
    NEXT.update(headers=td.Headers([("sec-websocket-protocol", offered.decode("latin-1"))]))
    answer = await read_head(
        port, upgrade("/upgrade/cafe", b"Sec-WebSocket-Protocol: " + offered + b"\r\n")
    )
    assert answer.startswith(b"HTTP/1.1 101 "), answer
    assert b"sec-websocket-protocol: " + offered + b"\r\n" in answer.lower(), answer
    await still_serves(port)


async def test_101_header_that_is_not_latin_1_gets_500_and_drops_the_socket(
    port: int, upgrade_runtime: td.Runtime
) -> None:
    NEXT.update(headers=td.Headers([("sec-websocket-protocol", "\u2603")]))
    answer = await read_head(port, upgrade("/upgrade/snowman"))
    assert answer.startswith(b"HTTP/1.1 500 "), answer
    stub = upgrade_runtime.namespace("upgraders").get_by_name("snowman")

    async def count(instance: Upgrader, ctx: Any) -> int:
        return len(ctx.get_websockets())

    left = await run_in_object(stub, count)
    assert left == 0, f"the object kept {left} socket(s) no connection serves"
    await still_serves(port)


async def test_unexpected_error_in_the_connection_path_gives_500_and_is_logged(
    port: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Any exception in the per-connection path, not only the known ones.
    from trio_durable._gateway import _connection

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected failure")

    monkeypatch.setattr(_connection, "build_request", broken)
    with caplog.at_level(logging.ERROR, logger="trio_durable.gateway"):
        answer = await raw_exchange(port, b"GET /forged HTTP/1.1\r\nhost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 500 "), answer
    assert "injected failure" in caplog.text, "the failure is logged with its traceback"
    monkeypatch.undo()
    await still_serves(port)
