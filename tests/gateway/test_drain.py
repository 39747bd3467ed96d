"""Draining a server: requests in flight are answered, idle connections close, no new ones.

What a stopping or restarting server does before it goes (``serve`` and
``serve --workers N`` on SIGTERM, a worker handing over on SIGHUP).
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import attrs
import pytest
import trio

import trio_durable as td
from trio_durable._gateway import _connection
from trio_durable._gateway._connection import Site, serve_connection
from trio_durable._gateway._options import ServeOptions
from trio_durable._gateway._serve import _gateways, drain
from trio_durable._gateway._upgrade import Upgrades

from .helpers import PATIENCE

Worker = Callable[[td.Request, td.Runtime], Awaitable[td.Response]]


@attrs.define(eq=False)
class Nothing(td.DurableObject):
    pass


async def _request(stream: trio.SocketStream, path: str) -> bytes:
    """One keep-alive request; the whole response (Content-Length bodies only)."""
    await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some()
        assert chunk, f"the connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += await stream.receive_some()
    return head + b"\r\n\r\n" + body


def _assert_refused(port: int) -> None:
    """Nothing listens on ``port`` any more: a connection is refused, not accepted and closed."""
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port)).close()


async def test_drain_answers_requests_in_flight_and_closes_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The fresh connection below sends its request after the drain began:
    # a grace this long cannot end first, however loaded the machine.
    monkeypatch.setattr(_connection, "FIRST_REQUEST_GRACE", PATIENCE)
    release = trio.Event()
    started = trio.Event()

    async def worker(request: td.Request, runtime: td.Runtime) -> td.Response:
        if request.path == "/slow":
            started.set()
            await release.wait()
        return td.Response.text(request.path)

    async with td.open_runtime({"nothing": Nothing}) as runtime, trio.open_nursery() as nursery:
        port = await nursery.start(
            functools.partial(td.serve, runtime, worker, host="127.0.0.1", port=0)
        )
        idle = await trio.open_tcp_stream("127.0.0.1", port)
        assert b"200" in await _request(idle, "/first")  # now waiting for its next request
        busy = await trio.open_tcp_stream("127.0.0.1", port)
        answer: list[bytes] = []

        async def slow() -> None:
            answer.append(await _request(busy, "/slow"))

        nursery.start_soon(slow)
        await started.wait()
        # A connection accepted before the drain whose request is still on its way.
        fresh = await trio.open_tcp_stream("127.0.0.1", port)
        await trio.testing.wait_all_tasks_blocked()  # accepted, waiting for its first request
        drained = trio.Event()

        async def draining() -> None:
            await drain(runtime)
            drained.set()

        nursery.start_soon(draining)
        with trio.fail_after(10):
            assert await idle.receive_some() == b"", "the idle connection is closed"
        late = await _request(fresh, "/late")
        assert late.startswith(b"HTTP/1.1 200") and b"connection: close" in late.lower()
        await fresh.aclose()
        await trio.testing.wait_all_tasks_blocked()  # the accept loop has ended
        _assert_refused(port)  # no new connection is taken any more
        assert not drained.is_set(), "drain waits for the request in flight"
        release.set()
        with trio.fail_after(10):
            await drained.wait()
        assert answer and answer[0].startswith(b"HTTP/1.1 200")
        assert b"connection: close" in answer[0].lower()
        assert answer[0].endswith(b"/slow")
        with trio.fail_after(10):
            assert await busy.receive_some() == b"", "then that connection closes too"
        await idle.aclose()
        await busy.aclose()
        nursery.cancel_scope.cancel()


async def test_drain_of_a_runtime_nothing_serves_returns_at_once() -> None:
    async with td.open_runtime({"nothing": Nothing}) as runtime:
        with trio.fail_after(5):
            await drain(runtime)


# ------------------------------------------------ connections accepted around the drain


async def _echo_path(request: td.Request, runtime: td.Runtime) -> td.Response:
    return td.Response.text(request.path)


@asynccontextmanager
async def _serving(worker: Worker = _echo_path) -> AsyncIterator[tuple[td.Runtime, int]]:
    async with td.open_runtime({"nothing": Nothing}) as runtime, trio.open_nursery() as nursery:
        port = await nursery.start(
            functools.partial(td.serve, runtime, worker, host="127.0.0.1", port=0)
        )
        yield runtime, port
        nursery.cancel_scope.cancel()


def _connect_and_send(port: int, data: bytes) -> socket.socket:
    """A blocking connect and send, with no checkpoint: the server cannot accept meanwhile."""
    client = socket.create_connection(("127.0.0.1", port))
    client.sendall(data)
    client.setblocking(False)
    return client


async def _read_to_end(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset counts as a close)."""
    data = bytearray()
    with trio.fail_after(PATIENCE):
        while True:
            try:
                chunk = sock.recv(1 << 20)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(sock)
                continue
            except ConnectionResetError:
                return bytes(data) + b"<reset>"
            if not chunk:
                return bytes(data)
            data += chunk


async def _drain_while_reading(runtime: td.Runtime, client: socket.socket) -> bytes:
    """Drain ``runtime`` (begun before any checkpoint) while reading what ``client`` gets."""
    answer: list[bytes] = []

    async def read() -> None:
        answer.append(await _read_to_end(client))
        client.close()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        with trio.fail_after(PATIENCE):
            await drain(runtime)  # runs up to its first checkpoint before read() starts
    return answer[0]


def _status_and_headers(answer: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    head = answer.partition(b"\r\n\r\n")[0]
    status, *lines = head.split(b"\r\n")
    headers = [
        (name.strip().lower(), value.strip())
        for name, _, value in (line.partition(b":") for line in lines)
    ]
    return status, headers


async def test_a_connection_waiting_in_the_backlog_when_the_drain_begins_is_answered() -> None:
    async with _serving() as (runtime, port):
        await trio.testing.wait_all_tasks_blocked()  # the accept loop waits
        # Connected and sent, but not accepted: the drain begins before the
        # accept loop runs again.
        client = _connect_and_send(port, b"GET /queued HTTP/1.1\r\nHost: h\r\n\r\n")
        answer = await _drain_while_reading(runtime, client)
    status, headers = _status_and_headers(answer)
    assert status == b"HTTP/1.1 200 OK", f"answered, not reset: {answer!r}"
    assert (b"connection", b"close") in headers, answer
    assert answer.endswith(b"/queued"), answer


async def test_a_connection_whose_task_starts_after_the_drain_answers_its_first_request() -> None:
    async with td.open_runtime({"nothing": Nothing}) as runtime:
        options = ServeOptions(host="127.0.0.1", port=0)
        site = Site(runtime, _echo_path, options, Upgrades(runtime, options))
        with socket.create_server(("127.0.0.1", 0)) as listening:
            client = _connect_and_send(
                listening.getsockname()[1], b"GET /first HTTP/1.1\r\nHost: h\r\n\r\n"
            )
            accepted, peer = listening.accept()
        accepted.setblocking(False)
        site.drain()  # the drain begins between the accept and the connection's task
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_connection, site, accepted, peer)
            answer = await _read_to_end(client)
            client.close()
    status, headers = _status_and_headers(answer)
    assert status == b"HTTP/1.1 200 OK", f"answered, not reset: {answer!r}"
    assert (b"connection", b"close") in headers, answer
    assert answer.endswith(b"/first"), answer


async def test_a_keep_alive_request_begun_before_the_drain_is_answered() -> None:
    async with _serving() as (runtime, port):
        client = _connect_and_send(port, b"GET /one HTTP/1.1\r\nHost: h\r\n\r\n")
        first = b""
        with trio.fail_after(PATIENCE):
            while not first.endswith(b"/one"):
                await trio.lowlevel.wait_readable(client)
                first += client.recv(65536)
        await trio.testing.wait_all_tasks_blocked()  # waiting for the next request
        # Half of the next request is in the server's kernel buffer.
        client.send(b"GET /two HTTP/1.1\r\nHo")

        async def rest() -> None:
            await trio.lowlevel.checkpoint()  # runs once the drain has begun
            client.send(b"st: h\r\n\r\n")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(rest)
            answer = await _drain_while_reading(runtime, client)
    status, headers = _status_and_headers(answer)
    assert status == b"HTTP/1.1 200 OK", answer
    assert (b"connection", b"close") in headers, answer
    assert answer.endswith(b"/two"), answer


async def test_a_request_still_arriving_when_the_grace_ends_is_answered_503() -> None:
    async with _serving() as (runtime, port):
        client = _connect_and_send(port, b"GET /never-finished HTTP/1.1\r\nHo")
        answer = await _drain_while_reading(runtime, client)
    status, headers = _status_and_headers(answer)
    assert status == b"HTTP/1.1 503 Service Unavailable", answer
    assert (b"connection", b"close") in headers, answer
    assert (b"retry-after", b"1") in headers, answer


async def test_an_idle_keep_alive_connection_closes_without_an_answer() -> None:
    async with _serving() as (runtime, port):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        assert b"200 OK" in await _request(stream, "/one")
        await trio.testing.wait_all_tasks_blocked()  # waiting for a next request
        with trio.fail_after(PATIENCE):
            await drain(runtime)
        assert await stream.receive_some() == b"", "closed, with nothing sent"
        await stream.aclose()


async def test_the_answer_during_a_drain_has_one_connection_header() -> None:
    async def keep_alive(request: td.Request, runtime: td.Runtime) -> td.Response:
        return td.Response.text("x", headers={"Connection": "keep-alive"})

    async with _serving(keep_alive) as (runtime, port):
        await trio.testing.wait_all_tasks_blocked()
        client = _connect_and_send(port, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        answer = await _drain_while_reading(runtime, client)
    _status, headers = _status_and_headers(answer)
    connection = [value for name, value in headers if name == b"connection"]
    assert connection == [b"close"], f"one Connection header, saying close: {answer!r}"


async def test_drain_stops_every_serve_of_the_runtime() -> None:
    async with td.open_runtime({"nothing": Nothing}) as runtime, trio.open_nursery() as nursery:
        ports = [
            await nursery.start(
                functools.partial(td.serve, runtime, _echo_path, host="127.0.0.1", port=0)
            )
            for _ in range(2)
        ]
        idle = []
        for port in ports:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            assert b"200 OK" in await _request(stream, "/one")
            idle.append(stream)
        await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(PATIENCE):
            await drain(runtime)
        for port, stream in zip(ports, idle, strict=True):
            assert await stream.receive_some() == b"", f"the connection to {port} is closed"
            await stream.aclose()
            _assert_refused(port)
        nursery.cancel_scope.cancel()


# ------------------------------------------------ a drain that begins during an answer

#: Larger than what the kernel buffers between the server and a client that
#: reads nothing (the server's send buffer, at most 4 MiB by default, and the
#: client's receive buffer, set small below): the answer stays in progress.
_BIG = 16 * 1024 * 1024


async def _big_or_path(request: td.Request, runtime: td.Runtime) -> td.Response:
    if request.path == "/big":
        return td.Response(body=b"x" * _BIG)
    return td.Response.text(request.path)


@pytest.mark.parametrize("second", ["sent with the first", "sent during the answer", "none"])
async def test_a_drain_during_a_long_answer_serves_the_request_pipelined_behind_it(
    second: str,
) -> None:
    big = b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n"
    two = b"GET /two HTTP/1.1\r\nHost: h\r\n\r\n"
    async with _serving(_big_or_path) as (runtime, port):
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        client.connect(("127.0.0.1", port))
        client.sendall(big + two if second == "sent with the first" else big)
        client.setblocking(False)
        with trio.fail_after(PATIENCE):
            # The answer has begun (encoded before the drain: no
            # ``connection: close``) and cannot end before we read it.
            await trio.lowlevel.wait_readable(client)
        if second == "sent during the answer":
            client.send(two)  # unread in the server's kernel buffer
        answer = await _drain_while_reading(runtime, client)
    assert not answer.endswith(b"<reset>"), "the connection was reset"
    status, headers = _status_and_headers(answer)
    assert status == b"HTTP/1.1 200 OK", answer[:200]
    assert (b"connection", b"close") not in headers, "the drain began before the answer"
    head_length = answer.index(b"\r\n\r\n") + 4
    rest = answer[head_length + _BIG :]
    assert answer[head_length : head_length + _BIG] == b"x" * _BIG, "the whole body arrived"
    if second == "none":
        assert rest == b"", rest[:200]
        return
    status, headers = _status_and_headers(rest)
    assert status == b"HTTP/1.1 200 OK", f"the pipelined request was not answered: {rest!r}"
    assert (b"connection", b"close") in headers, rest
    assert rest.endswith(b"/two"), rest


# ------------------------------------------------ a socket shared with other processes


async def test_a_drain_leaves_the_backlog_of_a_shared_socket_to_the_other_processes() -> None:
    with socket.create_server(("127.0.0.1", 0)) as other_process:
        port = other_process.getsockname()[1]
        async with td.open_runtime({"nothing": Nothing}) as runtime:
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    functools.partial(
                        td.serve,
                        runtime,
                        _echo_path,
                        host="127.0.0.1",
                        port=port,
                        sock=socket.socket(fileno=os.dup(other_process.fileno())),
                    )
                )
                await trio.testing.wait_all_tasks_blocked()  # the accept loop waits
                client = _connect_and_send(port, b"GET /queued HTTP/1.1\r\nHost: h\r\n\r\n")
                with trio.fail_after(PATIENCE):
                    await drain(runtime)
                nursery.cancel_scope.cancel()
            other_process.setblocking(False)
            # Still waiting for the process that goes on accepting.
            queued, _peer = other_process.accept()
            queued.close()
            client.close()


async def test_serve_that_cannot_listen_leaves_nothing_for_drain() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        async with td.open_runtime({"nothing": Nothing}) as runtime:
            with pytest.raises(OSError, match="ddress already in use"):
                await td.serve(runtime, _echo_path, host="127.0.0.1", port=port)
            assert not _gateways.get(runtime), "the failed serve() is still registered"
