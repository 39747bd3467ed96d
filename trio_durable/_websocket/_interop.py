"""trio-websocket at the edges: outbound sockets and adopting server connections.

* :func:`connect_websocket` opens an outbound WebSocket (a client) with
  trio-websocket and returns it as a :class:`~trio_durable.WebSocket` in the
  standard API (``send``, ``async for``, ``close``). Opened inside an object,
  it pins the object (no hibernation) until it closes; if the object is
  reset (or force-evicted) first, the socket is closed with it.
* :func:`hand_over_websocket` lets an application that already runs
  ``trio_websocket.serve_websocket`` give an incoming connection to an object:
  the object's ``fetch`` sees the upgrade request and accepts the pair as
  usual (hibernatable or standard).

Both use :class:`TrioWebSocketTransport`, a :class:`Transport` over a
``trio_websocket.WebSocketConnection``. trio-websocket keeps a reader task
per connection, so these sockets are never *parked*: they cost what
trio-websocket costs. Sockets served by ``td.serve`` are the cheap ones.
"""

from __future__ import annotations

import logging
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import trio
import trio_websocket

from .._core._live import current_object
from .._http import Request, Response
from .._limits import MAX_MESSAGE_SIZE, SEND_BUFFER_LIMIT, CloseCode
from .._stubs import Stub
from ._socket import WebSocket, bind_client_end, outbound_socket, pin_socket
from ._socket_home import current_home
from ._transport import DISCONNECTED_REASON, SLOW_CLIENT_REASON, MessageSink

__all__ = ["TrioWebSocketTransport", "connect_websocket", "hand_over_websocket"]

logger = logging.getLogger("trio_durable.websocket")


_CLOSE = object()


class TrioWebSocketTransport:
    """A :class:`Transport` over a ``trio_websocket.WebSocketConnection``.

    Sends are queued and written by one writer task at a time, so they never
    block the sender and keep their order; a peer that lets more than
    ``send_buffer`` bytes pile up is disconnected.
    """

    __slots__ = (
        "_buffered",
        "_close_args",
        "_closing",
        "_connection",
        "_nursery",
        "_queue",
        "_send_buffer",
        "_writing",
    )

    def __init__(
        self,
        connection: trio_websocket.WebSocketConnection,
        nursery: trio.Nursery,
        *,
        send_buffer: int = SEND_BUFFER_LIMIT,
    ) -> None:
        self._connection = connection
        self._nursery = nursery
        self._send_buffer = send_buffer
        self._queue: deque[Any] = deque()
        self._buffered = 0
        self._writing = False
        self._closing = False
        self._close_args: tuple[int, str] = (CloseCode.NORMAL, "")

    @property
    def is_open(self) -> bool:
        return not self._closing and self._connection.closed is None

    def send_message(self, message: str | bytes) -> None:
        if not self.is_open:
            raise trio.ClosedResourceError("the WebSocket is closing or closed")
        size = len(message)
        if self._buffered + size > self._send_buffer:
            logger.warning("dropping a slow WebSocket peer: %d bytes queued", self._buffered)
            self.send_close(CloseCode.TRY_AGAIN_LATER, SLOW_CLIENT_REASON)
            return
        self._buffered += size
        self._queue.append(message)
        self._start_writer()

    def send_close(self, code: int, reason: str) -> None:
        if self._closing:
            return
        self._closing = True
        self._close_args = (code, reason)
        self._queue.append(_CLOSE)
        self._start_writer()

    def abort(self) -> None:
        self._queue.clear()
        self._buffered = 0
        self.send_close(CloseCode.GOING_AWAY, "going away")

    def _start_writer(self) -> None:
        if not self._writing:
            self._writing = True
            self._nursery.start_soon(self._write)

    async def _write(self) -> None:
        try:
            while self._queue:
                item = self._queue.popleft()
                if item is _CLOSE:
                    code, reason = self._close_args
                    await self._connection.aclose(code, reason or None)
                    return
                self._buffered -= len(item)
                await self._connection.send_message(item)
        except trio_websocket.ConnectionClosed:
            self._queue.clear()
        finally:
            self._writing = False

    async def run_reader(self, sink: MessageSink) -> None:
        """Deliver what the connection receives to ``sink`` until it ends."""
        try:
            while True:
                message = await self._connection.get_message()
                await sink.on_message(message)
        except trio_websocket.ConnectionClosed as closed:
            reason = closed.reason
            code = reason.code if reason is not None else CloseCode.ABNORMAL
            text = (reason.reason or "") if reason is not None else DISCONNECTED_REASON
            if code == CloseCode.ABNORMAL:
                text = DISCONNECTED_REASON
            await sink.on_close(code, text, code != CloseCode.ABNORMAL)
        finally:
            self._closing = True


async def connect_websocket(
    url: str,
    *,
    subprotocols: list[str] | None = None,
    headers: list[tuple[str, str]] | None = None,
    max_message_size: int = MAX_MESSAGE_SIZE,
) -> WebSocket:
    """Open an outbound WebSocket to ``url`` (``ws://`` or ``wss://``).

    Returns an open :class:`~trio_durable.WebSocket` in the standard API:
    ``await ws.send(...)``, ``async for message in ws``, ``await ws.close()``.
    Inside an object it pins the object until it closes.

    Raises:
        trio_websocket.HandshakeError: the server refused or the connection
            failed (``ConnectionRejected`` carries the HTTP status).
    """
    record = current_object()
    home = current_home()
    # The connection nursery, not the object's: trio-websocket must be able to
    # finish a closing handshake after the object let go of the socket.
    nursery = home.connection_nursery
    extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers or []]
    ws: WebSocket = await nursery.start(
        _own_outbound_connection, nursery, url, subprotocols, extra, max_message_size
    )
    if record is not None:
        pin_socket(ws, home, record)
    return ws


async def _own_outbound_connection(
    nursery: trio.Nursery,
    url: str,
    subprotocols: list[str] | None,
    extra_headers: list[tuple[bytes, bytes]],
    max_message_size: int,
    *,
    task_status: trio.TaskStatus[WebSocket] = trio.TASK_STATUS_IGNORED,
) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"a WebSocket URL starts with ws:// or wss:// and names a host: {url!r}")
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    # We open (and close) the TCP stream ourselves: trio-websocket leaves a
    # client's stream open when the server closes first.
    stream: trio.abc.Stream
    if secure:
        stream = await trio.open_ssl_over_tcp_stream(
            parts.hostname, port, ssl_context=ssl.create_default_context()
        )
    else:
        stream = await trio.open_tcp_stream(parts.hostname, port)
    try:
        async with trio.open_nursery() as own:
            connection = await trio_websocket.wrap_client_stream(
                own,
                stream,
                parts.hostname if port in (80, 443) else f"{parts.hostname}:{port}",
                resource,
                subprotocols=subprotocols,
                extra_headers=extra_headers,
                max_message_size=max_message_size,
            )
            transport = TrioWebSocketTransport(connection, nursery)
            ws = outbound_socket(transport, url=url, protocol=connection.subprotocol)
            task_status.started(ws)
            await transport.run_reader(ws)
            own.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()


def _request_from(
    source: trio_websocket.WebSocketRequest | trio_websocket.WebSocketConnection,
) -> Request:
    raw_headers: Sequence[tuple[bytes, bytes]] = (
        source.handshake_headers
        if isinstance(source, trio_websocket.WebSocketConnection)
        else source.headers
    )
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw_headers]
    host = next((v for k, v in headers if k.lower() == "host"), "localhost")
    remote = source.remote
    client = (
        (str(remote.address), int(remote.port))
        if isinstance(remote, trio_websocket.Endpoint)
        else None
    )
    return Request(method="GET", url=f"http://{host}{source.path}", headers=headers, client=client)


async def hand_over_websocket(
    connection: trio_websocket.WebSocketRequest | trio_websocket.WebSocketConnection,
    target: Stub | Callable[[Request], Awaitable[Response]],
) -> None:
    """Give a connection from ``trio_websocket.serve_websocket`` to an object.

    Call it in the ``serve_websocket`` handler. The object's ``fetch`` (or
    the ``target`` function) gets the upgrade request and answers as usual,
    with a 101 carrying a WebSocketPair that it accepted (hibernatable or
    standard). Returns when the connection ends: the handler must stay alive
    that long, because trio-websocket ties the connection to it.

    Args:
        connection: Either the *unaccepted* ``WebSocketRequest`` (best: a
            refusal becomes an HTTP response with the object's status and
            body), or a ``WebSocketConnection`` the handler already accepted
            (a refusal then closes it with 1008 and the status in the reason).
        target: A stub, or any ``async fetch(request) -> Response``.
    """
    request = _request_from(connection)
    fetch = target.fetch if isinstance(target, Stub) else target
    response = await fetch(request)
    client = response.web_socket
    protocol = response.headers.get("sec-websocket-protocol")
    if isinstance(connection, trio_websocket.WebSocketConnection):
        if response.status != 101 or client is None:
            await connection.aclose(
                CloseCode.POLICY_VIOLATION, f"refused by the object: HTTP {response.status}"
            )
            return
        accepted = connection
        protocol = connection.subprotocol
    else:
        if response.status != 101 or client is None:
            await connection.reject(response.status, body=response.body or None)
            return
        accepted = await connection.accept(subprotocol=protocol)
    async with trio.open_nursery() as nursery:
        transport = TrioWebSocketTransport(accepted, nursery)
        try:
            sink = bind_client_end(client, transport, url=request.url, protocol=protocol)
        except (TypeError, RuntimeError):
            logger.exception("the object's 101 response could not be used")
            await accepted.aclose(CloseCode.INTERNAL_ERROR, "server error")
            return
        await transport.run_reader(sink)
