"""Draining a server: requests in flight are answered, idle connections close, no new ones.

What a stopping or restarting server does before it goes (``serve`` and
``serve --workers N`` on SIGTERM, a worker handing over on SIGHUP).
"""

from __future__ import annotations

import functools

import attrs
import trio

import trio_durable as td
from trio_durable._gateway._serve import drain


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


async def test_drain_answers_requests_in_flight_and_closes_the_rest() -> None:
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
        await trio.sleep(0.2)  # accepted by now, and waiting for its first request
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
        # No new connection is taken any more.
        try:
            refused = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            pass
        else:
            with trio.fail_after(10):
                assert await refused.receive_some() == b""
            await refused.aclose()
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
