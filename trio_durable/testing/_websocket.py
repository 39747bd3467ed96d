"""An in-memory WebSocket client for tests: no sockets, no codec, same semantics."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

from .._http import Request, Response
from .._object import DurableObject
from .._stubs import Stub
from .._websocket._socket import WebSocket

__all__ = ["open_websocket"]

_UPGRADE_HEADERS = [
    ("upgrade", "websocket"),
    ("connection", "Upgrade"),
    ("sec-websocket-version", "13"),
    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
]


@asynccontextmanager
async def open_websocket(
    target: Stub | DurableObject | Callable[[Request], Awaitable[Response]],
    url: str = "http://test/",
    *,
    headers: Any = None,
) -> AsyncIterator[WebSocket]:
    """Connect an in-memory WebSocket client to an object (or any fetch function).

    ::

        async with open_websocket(stub, "http://test/room?name=ann") as ws:
            await ws.send("hello")
            reply = await ws.receive()

    ``target`` is a stub (its ``fetch`` gets the upgrade request) or a
    function taking a :class:`~trio_durable.Request`, such as
    ``lambda r: worker(r, runtime)``. The client is the client end of the
    pair the object returned; it behaves like a network client (the object
    may hibernate while it stays connected) but moves no bytes. On exit it
    closes with 1000 if still open.

    Raises:
        RuntimeError: the response was not a 101 carrying a WebSocket; the
            message has the status and body.
    """
    extra = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    request = Request(method="GET", url=url, headers=_UPGRADE_HEADERS + extra)
    fetch: Callable[[Request], Awaitable[Response]]
    if isinstance(target, Stub):
        fetch = target.fetch
    elif callable(target):
        fetch = target
    else:
        raise TypeError(f"open_websocket() takes a stub or a fetch function, got {target!r}")
    response = await fetch(request)
    client = response.web_socket
    if response.status != 101 or not isinstance(client, WebSocket):
        raise RuntimeError(
            f"the WebSocket upgrade was refused: HTTP {response.status} {response.body[:200]!r}"
        )
    client.accept()
    try:
        yield client
    finally:
        if client.ready_state < WebSocket.CLOSING:
            with trio.CancelScope(shield=True):
                await client.close()
