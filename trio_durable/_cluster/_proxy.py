"""A WebSocket connection relayed to the node that owns its object: a byte pipe.

A client's connection cannot travel between machines the way it travels
between the workers of one (as a descriptor). When a node accepts a
WebSocket upgrade for an object another node owns, it opens a link
connection to the owner (purpose *proxy*, both ends proved), sends the
request, and once the owner has answered it, relays bytes both ways between
the client and that connection. The owner sees the link connection as the
client's socket: it answers the handshake on it and runs the WebSocket as
any other (hibernation, tags, attachments, hand-over to its successor on
its own node).

:func:`relay` is the pipe: each direction copies what it reads, with
backpressure (it reads again once the last read is written); an end of
stream is passed on as a half-close, and when either side fails, both are
closed, so the other end sees the connection drop.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Final

import trio

__all__ = ["relay"]

_CHUNK: Final = 64 * 1024


async def relay(
    client: trio.socket.SocketType, owner: trio.socket.SocketType, first: bytes
) -> None:
    """Copy bytes between ``client`` and ``owner`` until both ends are done; close both.

    Args:
        client: The client's connection.
        owner: The link connection to the owner's node.
        first: Bytes already read from ``owner`` (sent to the client first).
    """
    try:
        if first:
            await _send_all(client, first)
        async with trio.open_nursery() as nursery:

            async def pipe(source: trio.socket.SocketType, sink: trio.socket.SocketType) -> None:
                try:
                    while data := await source.recv(_CHUNK):
                        await _send_all(sink, data)
                    with contextlib.suppress(OSError):
                        sink.shutdown(socket.SHUT_WR)
                except OSError:
                    nursery.cancel_scope.cancel()  # one side failed: drop both

            nursery.start_soon(pipe, client, owner)
            nursery.start_soon(pipe, owner, client)
    except OSError:
        pass
    finally:
        client.close()
        owner.close()


async def _send_all(sink: trio.socket.SocketType, data: bytes) -> None:
    view = memoryview(data)
    while view:
        sent = await sink.send(view)
        view = view[sent:]
