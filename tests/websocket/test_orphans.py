"""A socket accepted by a fetch that does not hand it out is dropped, not orphaned.

A server end can only ever be connected through the client end that the
fetch returns in ``Response.websocket(client)``. When the fetch raises, or
answers without that client end, nothing will ever connect it: it must not
stay in ``get_websockets()`` (where broadcasts would pile messages into it
until ``LimitExceededError``), and sending to it raises
``trio.ClosedResourceError`` at once, the error broadcast loops expect.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

import trio_durable as td
from trio_durable.testing import open_websocket

from .objects import Careless, FetchFailed, Proxy

UPGRADE = [
    ("upgrade", "websocket"),
    ("connection", "Upgrade"),
    ("sec-websocket-version", "13"),
    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
]


@pytest.fixture
async def runtime(runtime_factory) -> AsyncIterator[td.Runtime]:  # type: ignore[no-untyped-def]
    async with runtime_factory(objects={"careless": Careless, "proxies": Proxy}) as rt:
        yield rt


def careless(runtime: td.Runtime) -> td.Stub:
    return runtime.namespace("careless").get_by_name("c")


def upgrade(query: str) -> td.Request:
    return td.Request(method="GET", url=f"http://test/?{query}", headers=UPGRADE)


async def test_socket_accepted_by_a_fetch_that_raises_leaves_the_object(
    runtime: td.Runtime,
) -> None:
    stub = careless(runtime)
    with pytest.raises(FetchFailed):
        await stub.fetch(upgrade("then=raise"))
    assert await stub.count() == 0, "get_websockets() still lists the failed fetch's socket"


async def test_sending_to_the_socket_of_a_failed_fetch_raises_closed_resource_error(
    runtime: td.Runtime,
) -> None:
    stub = careless(runtime)
    with pytest.raises(FetchFailed):
        await stub.fetch(upgrade("then=raise"))
    outcomes = await stub.send_to_kept()
    assert outcomes == ["ClosedResourceError"], f"the first send already fails: {outcomes}"


async def test_standard_socket_accepted_by_a_fetch_that_raises_is_closed(
    runtime: td.Runtime,
) -> None:
    stub = careless(runtime)
    with pytest.raises(FetchFailed):
        await stub.fetch(upgrade("then=raise&standard=1"))
    outcomes = await stub.send_to_kept()
    assert outcomes == ["ClosedResourceError"], f"a standard socket is dropped too: {outcomes}"


async def test_socket_of_a_fetch_that_answers_without_it_is_dropped(runtime: td.Runtime) -> None:
    stub = careless(runtime)
    response = await stub.fetch(upgrade("then=text"))
    assert response.status == 200, response
    assert await stub.count() == 0, "a 200 answer leaves no socket behind"


async def test_only_the_socket_whose_client_end_is_returned_is_kept(runtime: td.Runtime) -> None:
    stub = careless(runtime)
    async with open_websocket(stub, "http://test/?then=other") as client:
        assert await stub.count() == 1, "the socket the response does not carry is dropped"
        assert await stub.send_to_kept() == ["ClosedResourceError", "sent"]
        assert await client.receive() == "hello?", "the returned socket works"


async def test_broadcast_after_failed_fetches_reaches_the_live_socket(runtime: td.Runtime) -> None:
    stub = careless(runtime)
    async with open_websocket(stub, "http://test/") as client:
        assert await client.receive() == "welcome"
        for _ in range(3):
            with pytest.raises(FetchFailed):
                await stub.fetch(upgrade("then=raise"))
        assert await stub.broadcast("to all") == 1, "only the connected socket is a target"
        assert await client.receive() == "to all"


async def test_welcome_sent_before_returning_the_response_still_arrives(
    runtime: td.Runtime,
) -> None:
    stub = careless(runtime)
    async with open_websocket(stub, "http://test/") as client:
        assert await client.receive() == "welcome", "the early message was kept"
        assert await stub.count() == 1


async def test_socket_returned_through_a_proxy_fetch_is_kept(runtime: td.Runtime) -> None:
    proxy = runtime.namespace("proxies").get_by_name("p")
    async with open_websocket(proxy, "http://test/?target=c") as client:
        assert await client.receive() == "welcome"
        assert await careless(runtime).count() == 1, "the proxy returned the inner response"


async def test_socket_whose_response_a_proxy_discards_is_dropped(runtime: td.Runtime) -> None:
    proxy = runtime.namespace("proxies").get_by_name("p")
    response = await proxy.fetch(upgrade("target=c&drop=1"))
    assert response.status == 503, response
    stub = careless(runtime)
    assert await stub.count() == 0, "the outer fetch did not hand the socket out"
    assert await stub.send_to_kept() == ["ClosedResourceError"]


async def test_failed_fetch_through_the_gateway_gives_500_and_leaves_no_socket(
    runtime: td.Runtime, nursery: trio.Nursery
) -> None:
    async def worker(request: td.Request, runtime: td.Runtime) -> td.Response:
        return await careless(runtime).fetch(request)

    port = await nursery.start(
        lambda task_status: td.serve(
            runtime, worker, host="127.0.0.1", port=0, task_status=task_status
        )
    )
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(
            b"GET /?then=raise HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\n"
            b"connection: Upgrade\r\nsec-websocket-version: 13\r\n"
            b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        with trio.fail_after(5):
            answer = await stream.receive_some(65536)
    assert answer.startswith(b"HTTP/1.1 500 "), answer
    assert await careless(runtime).count() == 0, "the object keeps no socket for the 500"
