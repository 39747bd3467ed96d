"""Offering an upgrade's connection to the process that owns its object.

In a cluster, the worker that accepted a WebSocket upgrade is not always
the one that owns the target object. While the worker function runs for an
upgrade request on a plain TCP connection, the gateway offers the
connection (:data:`CURRENT_HANDOFF`): a dispatcher that sends the object's
``fetch`` to another process may *take* it, passing the socket's descriptor
and the bytes already read past the request along with the call. The owner
then answers on that socket itself (the 101 and the WebSocket, or a refusal),
so the object's sockets live in its owner's process, and this connection's
task sends nothing more and lets the socket go.

A TLS connection is never offered: its session state cannot move to
another process.

:func:`answer_on` is the owner's side: it writes a response (or completes
a 101) on a socket that another process accepted.
"""

from __future__ import annotations

import contextvars
import logging
import socket
import weakref
from typing import Any, Final

import attrs
import h11
import trio

from .._http import Request, Response
from .._websocket._socket import abandon_pair
from ._http1 import InvalidResponseError, encode_response, error_response
from ._upgrade import Upgrades
from ._wire import Wire

__all__ = ["CURRENT_HANDOFF", "UpgradeHandoff", "answer_on", "upgrades_of"]

logger: Final = logging.getLogger("trio_durable.gateway")


@attrs.define(eq=False)
class UpgradeHandoff:
    """An upgrade request's connection, on offer while the worker function runs.

    Attributes:
        request: The upgrade request (the offer is for this request only).
        sock: The client's socket.
        trailing: Bytes the client sent past the request head.
        taken: Set by whoever took the connection: the gateway then sends
            nothing and only closes its own descriptor.
    """

    request: Request
    sock: socket.socket
    trailing: bytes
    taken: bool = False


#: The connection on offer in the current task, if any.
CURRENT_HANDOFF: Final[contextvars.ContextVar[UpgradeHandoff | None]] = contextvars.ContextVar(
    "trio_durable_upgrade_handoff", default=None
)

# The upgrade machinery of the serve() call serving each runtime.
_upgrades: Final[weakref.WeakKeyDictionary[Any, Upgrades]] = weakref.WeakKeyDictionary()


def register_upgrades(runtime: Any, upgrades: Upgrades) -> None:
    """Make ``upgrades`` the way connections handed to ``runtime`` are completed."""
    _upgrades[runtime] = upgrades


def upgrades_of(runtime: Any) -> Upgrades | None:
    """The upgrade machinery of the ``serve()`` serving ``runtime``, if one runs."""
    return _upgrades.get(runtime)


def _responding_connection() -> h11.Connection:
    # An h11 server ready to answer: the request itself was parsed by the
    # process that accepted the connection.
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(
        b"GET / HTTP/1.1\r\nhost: handed-over\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n"
    )
    while not isinstance(conn.next_event(), h11.EndOfMessage):
        pass  # the request head, then its end (two events, as h11 always gives them)
    return conn


async def answer_on(
    upgrades: Upgrades,
    sock: socket.socket,
    request: Request,
    response: Response,
    trailing: bytes,
    write_timeout: float,
) -> None:
    """Answer ``request`` on a socket another process accepted (this process owns the object).

    A 101 with the object's WebSocket completes the upgrade here; anything
    else is written with ``connection: close`` and the socket closed.
    """
    wire = Wire(sock, None, write_timeout)
    conn = _responding_connection()
    if response.status == 101:
        error = upgrades.hand_over(wire, conn, request, response, trailing=trailing)
        if error is None:
            return
        response = error
    if response.web_socket is not None:
        abandon_pair(response.web_socket)  # not sent as a 101: the object keeps no socket
    try:
        data = encode_response(conn, response, method=request.method, close=True)
    except InvalidResponseError as exc:
        logger.error("an invalid response for a handed-over %s: %s", request.url, exc)
        data = encode_response(
            _responding_connection(), error_response(500), method="GET", close=True
        )
    try:
        await wire.send_all(data)
        await wire.linger()
    except (OSError, trio.BrokenResourceError):
        pass
    finally:
        wire.close()
