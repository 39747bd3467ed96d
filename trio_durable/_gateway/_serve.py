"""The gateway: ``serve()`` speaks HTTP/1.1 and WebSocket on one port.

Each accepted connection gets a handler task in the gateway's own nursery.
It reads requests with h11 (keep-alive supported), turns each into a
:class:`~trio_durable.Request`, calls the worker, and writes the
:class:`~trio_durable.Response` back. When the worker answers a WebSocket
upgrade with ``Response.websocket(client)``, the handler writes no response
itself: it binds the client end of the pair to a
:class:`~trio_durable._websocket._network.NetworkTransport`, gives that the
101 response and the bytes read past the request, and ends. From then on the
connection belongs to the runtime's connection nursery (where its reader and
writer run when needed) and to the shared socket parking (while it is idle),
so stopping ``serve()`` does not close open WebSockets; closing the runtime
does.

The sockets are plain stdlib sockets driven with ``trio.lowlevel``
(``wait_readable``/``wait_writable``) rather than ``trio.SocketStream``, so
that the same socket, and for TLS the same ``ssl.SSLObject`` over memory
BIOs (:class:`~trio_durable._websocket._tls.TlsState`), can be handed to
the WebSocket transport and parked.

Bad input gets a clear answer and never hurts other clients:

==========================================  ====================================
malformed HTTP                              400, connection closed
request line and headers over the limit     431, connection closed
body over the limit                         413, connection closed
head (or TLS handshake) not complete in     connection dropped, nothing sent
``handshake_timeout``; also the idle time
allowed between keep-alive requests
a response the client does not read for     connection dropped
``write_timeout``
the worker raises or returns a non-Response 500 (logged); keep-alive goes on
101 for a request that is not an upgrade    500
upgrade without a valid Sec-WebSocket-Key   400
Sec-WebSocket-Version other than 13         426 with ``Sec-WebSocket-Version: 13``
upgrade from an Origin not in               403
``allowed_origins``
upgrade refused by ``authenticate``         the hook's response
``max_connections`` connections open        503, connection closed
==========================================  ====================================

An upgrade request is checked (version, key, origin, then ``authenticate``)
*before* the worker runs, so a refused upgrade never reaches an object.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import http
import logging
import math
import socket
import ssl
from collections.abc import Awaitable, Callable, Collection
from typing import Any, Final, NoReturn, Protocol

import h11
import trio

from .._http import Headers, Request, Response
from .._limits import (
    CLOSE_TIMEOUT,
    FRAME_TIMEOUT,
    PARK_AFTER,
    SEND_BUFFER_LIMIT,
    check_positive_int,
    check_seconds,
)
from .._websocket._frames import DEFAULT_MAX_MESSAGE_SIZE, accept_key
from .._websocket._home import ConnectionHome
from .._websocket._hub import SocketHub
from .._websocket._network import NetworkTransport
from .._websocket._socket import abandon_pair, bind_client_end
from .._websocket._tls import TlsState

__all__ = [
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_HEADER_BYTES",
    "DEFAULT_WRITE_TIMEOUT",
    "Authenticator",
    "Worker",
    "serve",
]

logger: Final = logging.getLogger("trio_durable.gateway")

class Host(Protocol):
    """What the gateway needs from the runtime it serves: its socket hub."""

    @property
    def sockets(self) -> SocketHub:
        """Where upgraded WebSockets live."""


#: What ``serve`` calls for each request: ``async worker(request, runtime)``.
Worker = Callable[[Request, Any], Awaitable[Response]]
#: ``serve(authenticate=...)``: ``None`` lets an upgrade through, a Response refuses it.
Authenticator = Callable[[Request], Awaitable[Response | None]]

DEFAULT_HANDSHAKE_TIMEOUT: Final = 10.0
#: Seconds a client may leave an HTTP response unread (no byte taken) before it is dropped.
DEFAULT_WRITE_TIMEOUT: Final = 30.0
DEFAULT_MAX_CONNECTIONS: Final = 10_000
DEFAULT_MAX_HEADER_BYTES: Final = 16 * 1024
DEFAULT_MAX_BODY_BYTES: Final = 1024 * 1024

_RECV_SIZE: Final = 65536
# accept() errors that mean "the system is out of something": wait, retry.
_ACCEPT_CAPACITY_ERRNOS: Final = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
)
# At most this many over-capacity connections are answered 503 at once; more
# are closed without an answer, since answering costs a task each.
_MAX_REFUSING: Final = 64
_REFUSE_TIMEOUT: Final = 1.0
# After an error answer, how long the client's remaining input is drained
# (so that closing does not reset the connection before it read the answer).
_LINGER_TIMEOUT: Final = 1.0
# Headers of the 101 response that the gateway writes itself.
_UPGRADE_OWN_HEADERS: Final = frozenset(
    {"upgrade", "connection", "sec-websocket-accept", "content-length", "transfer-encoding"}
)


async def serve(
    runtime: Host,
    worker: Worker,
    *,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None = None,
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    park_after: float = PARK_AFTER,
    send_buffer_limit: int = SEND_BUFFER_LIMIT,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    close_timeout: float = CLOSE_TIMEOUT,
    write_timeout: float = DEFAULT_WRITE_TIMEOUT,
    frame_timeout: float = FRAME_TIMEOUT,
    max_messages_per_second: float | None = None,
    allowed_origins: Collection[str | None] | None = None,
    authenticate: Authenticator | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve HTTP/1.1 and WebSocket upgrades on one port; never returns.

    ::

        async with td.open_runtime(objects={"rooms": ChatRoom}) as runtime:
            await td.serve(runtime, worker, host="127.0.0.1", port=8787)

    Args:
        runtime: The runtime whose objects the worker reaches; upgraded
            WebSockets live in its connection nursery.
        worker: ``async worker(request, runtime) -> Response``, called for
            every request.
        host: The address to listen on.
        port: The port; ``0`` picks a free one (see ``task_status``).
        ssl_context: A server ``ssl.SSLContext`` to serve HTTPS and WSS.
        handshake_timeout: Seconds a client has to send a complete request
            head (and its body, and the TLS handshake), and the longest idle
            time between keep-alive requests.
        max_connections: Open connections (HTTP and WebSocket) above which
            new ones get 503.
        max_header_bytes: Largest request line plus headers; more gets 431.
        max_body_bytes: Largest request body; more gets 413.
        park_after: Seconds of silence before an idle WebSocket is parked.
        send_buffer_limit: Bytes a WebSocket may have waiting to be sent
            before its client is disconnected as too slow.
        max_message_size: Largest WebSocket message received; more closes
            the socket with 1009.
        close_timeout: Seconds to wait for a client's Close reply.
        write_timeout: Seconds an HTTP client may take no byte of a response
            the gateway is writing; then the connection is dropped and its
            handler task ends (default 30 s).
        frame_timeout: Seconds a WebSocket client may stay silent in the
            middle of a frame or fragmented message; then it is closed with
            1008 (default 30 s).
        max_messages_per_second: WebSocket messages (and Pings and Pongs)
            one connection may send per second, with bursts of one second's
            worth; more closes it with 1008. ``None`` (the default): no limit.
        allowed_origins: When given, a WebSocket upgrade whose ``Origin``
            header is not in it gets 403 before the worker runs. Values are
            compared exactly (``"https://example.com"``); put ``None`` in it
            to let in clients that send no ``Origin`` (browsers always do).
        authenticate: ``async authenticate(request) -> Response | None``,
            called for every WebSocket upgrade after the checks above and
            before the worker: ``None`` lets it through, a Response (say 401)
            is sent instead. It raising gives 500. Either way no object is
            touched.
        task_status: Gets the bound port (an ``int``) once listening, so
            ``port = await nursery.start(partial(serve, ...))`` works.

    Cancelling ``serve`` closes the listeners and the connections still
    speaking HTTP; upgraded WebSockets stay open until the runtime closes.
    """
    for name, seconds in (
        ("handshake_timeout", handshake_timeout),
        ("write_timeout", write_timeout),
        ("frame_timeout", frame_timeout),
    ):
        if not (seconds > 0 and math.isfinite(seconds)):
            raise ValueError(f"{name} must be positive seconds, got {seconds!r}")
    if max_messages_per_second is not None and not (
        max_messages_per_second > 0 and math.isfinite(max_messages_per_second)
    ):
        raise ValueError(
            f"max_messages_per_second must be positive or None, got {max_messages_per_second!r}"
        )
    # ConnectionHome takes checked values: check what it gets here, at the call.
    park_after = check_seconds("park_after", park_after, allow_zero=True)
    close_timeout = check_seconds("close_timeout", close_timeout)
    send_buffer_limit = check_positive_int("send_buffer_limit", send_buffer_limit)
    max_message_size = check_positive_int("max_message_size", max_message_size)
    origins: frozenset[str | None] | None = None
    if allowed_origins is not None:
        if isinstance(allowed_origins, str):
            raise TypeError("allowed_origins must be a collection of origins, not one str")
        origins = frozenset(allowed_origins)
    for name, value in (
        ("max_connections", max_connections),
        ("max_header_bytes", max_header_bytes),
        ("max_body_bytes", max_body_bytes),
    ):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    gateway = _Gateway(
        runtime,
        worker,
        ssl_context=ssl_context,
        handshake_timeout=float(handshake_timeout),
        max_connections=max_connections,
        max_header_bytes=max_header_bytes,
        max_body_bytes=max_body_bytes,
        write_timeout=float(write_timeout),
        allowed_origins=origins,
        authenticate=authenticate,
        home_options={
            "park_after": park_after,
            "send_buffer_limit": send_buffer_limit,
            "max_message_size": max_message_size,
            "close_timeout": close_timeout,
            "frame_timeout": frame_timeout,
            "max_messages_per_second": max_messages_per_second,
        },
    )
    listeners = await trio.open_tcp_listeners(port, host=host)
    try:
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(gateway.accept_loop, listener, nursery)
            bound = listeners[0].socket.getsockname()
            gateway.server_address = f"{host}:{bound[1]}"
            logger.info("serving on %s://%s", "https" if ssl_context else "http", bound)
            task_status.started(bound[1])
            await trio.sleep_forever()
    finally:
        for listener in listeners:
            await trio.aclose_forcefully(listener)
    raise AssertionError("unreachable")  # pragma: no cover


class WriteTimeoutError(trio.BrokenResourceError):
    """The client took no byte of what the gateway was writing for ``write_timeout``."""


class _Wire:
    """A raw non-blocking socket (plus TLS) as the HTTP side uses it: one task, in turn."""

    __slots__ = ("sock", "tls", "write_timeout")

    def __init__(
        self,
        sock: socket.socket,
        tls: TlsState | None,
        write_timeout: float = DEFAULT_WRITE_TIMEOUT,
    ) -> None:
        self.sock = sock
        self.tls = tls
        self.write_timeout = write_timeout

    async def handshake(self) -> None:
        """Run the TLS handshake (only for TLS wires)."""
        tls = self.tls
        assert tls is not None
        while True:
            try:
                tls.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._send_raw(tls.outgoing.read())
                raw = await self._recv_raw()
                if not raw:
                    raise trio.BrokenResourceError(
                        "the peer left during the TLS handshake"
                    ) from None
                tls.incoming.write(raw)
        await self._send_raw(tls.outgoing.read())

    async def receive_some(self) -> bytes:
        """Plaintext bytes from the peer; ``b""`` at the end of the stream."""
        sock, tls = self.sock, self.tls
        while True:
            try:
                if tls is None:
                    return sock.recv(_RECV_SIZE)
                data, to_send = tls.recv(sock)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(sock)
                continue
            if to_send:
                await self._send_raw(to_send)
            return data

    async def send_all(self, data: bytes) -> None:
        """Send all of ``data`` (encrypted on a TLS wire)."""
        if self.tls is not None:
            data = self.tls.encrypt(data)
        await self._send_raw(data)

    async def _recv_raw(self) -> bytes:
        while True:
            try:
                return self.sock.recv(_RECV_SIZE)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self.sock)

    async def _send_raw(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                sent = self.sock.send(view)
            except BlockingIOError:
                # A client that reads nothing must not hold this task forever.
                with trio.move_on_after(self.write_timeout) as scope:
                    await trio.lowlevel.wait_writable(self.sock)
                if scope.cancelled_caught:
                    raise WriteTimeoutError(
                        f"the client took no data for {self.write_timeout:g} s with "
                        f"{len(view):,} bytes left to send; the write timeout is "
                        f"{self.write_timeout:g} s"
                    ) from None
            else:
                view = view[sent:]

    async def linger(self) -> None:
        """Half-close, then read and drop what the client still sends, briefly.

        Closing a socket with unread input makes the kernel reset the
        connection, which can destroy our answer before the client reads it
        (typically a 413 while the client is still sending its body). A
        client that reads until EOF sees it at once.
        """
        with trio.move_on_after(_LINGER_TIMEOUT):
            try:
                if self.tls is not None:
                    with contextlib.suppress(ssl.SSLError):
                        self.tls.obj.unwrap()  # queue our close_notify
                    await self._send_raw(self.tls.outgoing.read())
                self.sock.shutdown(socket.SHUT_WR)
                while await self._recv_raw():
                    pass
            except (OSError, trio.BrokenResourceError):
                pass

    def close(self) -> None:
        trio.lowlevel.notify_closing(self.sock)
        self.sock.close()


class _Outcome:
    """What the handler does after one request/response exchange."""

    KEEP = "keep"  # keep-alive: read the next request
    CLOSE = "close"  # close the connection
    HANDED_OVER = "handed over"  # the socket now belongs to a WebSocket transport


class _Gateway:
    """The state of one ``serve()`` call."""

    def __init__(
        self,
        runtime: Host,
        worker: Worker,
        *,
        ssl_context: ssl.SSLContext | None,
        handshake_timeout: float,
        max_connections: int,
        max_header_bytes: int,
        max_body_bytes: int,
        write_timeout: float = DEFAULT_WRITE_TIMEOUT,
        allowed_origins: frozenset[str | None] | None = None,
        authenticate: Authenticator | None = None,
        home_options: dict[str, Any],
    ) -> None:
        self.runtime = runtime
        self.worker = worker
        self.ssl_context = ssl_context
        self.handshake_timeout = handshake_timeout
        self.max_connections = max_connections
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self.write_timeout = write_timeout
        self.allowed_origins = allowed_origins
        self.authenticate = authenticate
        self.home_options = home_options
        self.server_address = ""
        self.http_connections = 0
        self.refusing = 0
        self._home: ConnectionHome | None = None

    @property
    def open_connections(self) -> int:
        websockets = len(self._home) if self._home is not None else 0
        return self.http_connections + websockets

    def connection_home(self) -> ConnectionHome:
        """The shared home of upgraded connections, made on the first upgrade.

        Raises:
            trio.ClosedResourceError: The runtime's connection nursery is gone.
        """
        home = self._home
        if home is None:
            hub = self.runtime.sockets
            nursery = hub.connection_nursery
            home = ConnectionHome(nursery, hub.parking, **self.home_options)
            nursery.start_soon(home.run)
            self._home = home
        return home

    # ----------------------------------------------------------- accepting

    async def accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        listening = listener.socket
        while True:
            try:
                accepted, address = await listening.accept()
            except OSError as exc:
                if exc.errno in _ACCEPT_CAPACITY_ERRNOS:
                    logger.error(
                        "accept() failed with %s; retrying in 0.1 s",
                        errno.errorcode.get(exc.errno or 0, exc.errno),
                    )
                    await trio.sleep(0.1)
                    continue
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    continue
                raise
            sock = socket.socket(fileno=accepted.detach())
            sock.setblocking(False)
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            peer = (str(address[0]), int(address[1]))
            if self.open_connections >= self.max_connections:
                if self.refusing < _MAX_REFUSING:
                    self.refusing += 1
                    nursery.start_soon(self.refuse, sock)
                else:
                    sock.close()
                continue
            self.http_connections += 1
            nursery.start_soon(self.handle, sock, peer)

    async def refuse(self, sock: socket.socket) -> None:
        """Answer 503 to a connection over the limit, then close it."""
        wire = _Wire(sock, None)
        try:
            with trio.move_on_after(_REFUSE_TIMEOUT):
                if self.ssl_context is not None:
                    return  # a TLS handshake per refusal would cost what we lack
                body = b"Service Unavailable: too many open connections\n"
                await wire.send_all(
                    b"HTTP/1.1 503 Service Unavailable\r\n"
                    b"content-type: text/plain; charset=utf-8\r\n"
                    b"content-length: %d\r\nconnection: close\r\nretry-after: 1\r\n\r\n%s"
                    % (len(body), body)
                )
                # Read what the client sent until it closes, so that closing
                # does not reset the connection before it read our answer.
                sock.shutdown(socket.SHUT_WR)
                while await wire.receive_some():
                    pass
        except OSError:
            pass
        finally:
            self.refusing -= 1
            wire.close()

    # ------------------------------------------------------------ handling

    async def handle(self, sock: socket.socket, peer: tuple[str, int]) -> None:
        """Serve the requests of one connection, until it closes or is handed over."""
        tls = TlsState(self.ssl_context) if self.ssl_context is not None else None
        wire = _Wire(sock, tls, self.write_timeout)
        handed_over = False
        try:
            if tls is not None:
                with trio.move_on_after(self.handshake_timeout) as scope:
                    await wire.handshake()
                if scope.cancelled_caught:
                    logger.debug("%s: TLS handshake timed out", peer)
                    return
            conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_header_bytes)
            while True:
                outcome = await self.exchange(wire, conn, peer)
                if outcome is _Outcome.HANDED_OVER:
                    handed_over = True
                    return
                if outcome is _Outcome.CLOSE or conn.our_state is not h11.DONE:
                    return
                if conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except WriteTimeoutError as exc:
            logger.info("%s: dropped: %s", peer, exc)
        except (OSError, trio.BrokenResourceError, h11.ProtocolError) as exc:
            logger.debug("%s: connection ended: %r", peer, exc)
        finally:
            self.http_connections -= 1
            if not handed_over:
                wire.close()

    async def next_event(
        self, wire: _Wire, conn: h11.Connection, *, reading_body: bool = False
    ) -> object:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            if reading_body and conn.they_are_waiting_for_100_continue:
                await wire.send_all(
                    conn.send(h11.InformationalResponse(status_code=100, headers=[]))
                )
            conn.receive_data(await wire.receive_some())

    async def exchange(self, wire: _Wire, conn: h11.Connection, peer: tuple[str, int]) -> str:
        """Read one request, call the worker, answer; say what happens next."""
        with trio.move_on_after(self.handshake_timeout) as scope:
            try:
                event = await self.next_event(wire, conn)
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                if status == 431:
                    message = f"request head is over the limit of {self.max_header_bytes:,} bytes"
                else:
                    message = f"malformed HTTP request: {exc}"
                return await self.fail(wire, conn, status, message)
        if scope.cancelled_caught:
            logger.debug(
                "%s: no complete request head within %s s; dropped", peer, self.handshake_timeout
            )
            return _Outcome.CLOSE
        if not isinstance(event, h11.Request):
            return _Outcome.CLOSE  # the client closed (ConnectionClosed) between requests
        # h11 only limits a head that is still incomplete; one that arrived
        # whole in a single read is measured here.
        head_size = len(event.method) + len(event.target) + 12
        head_size += sum(len(name) + len(value) + 4 for name, value in event.headers.raw_items())
        if head_size > self.max_header_bytes:
            return await self.fail(
                wire,
                conn,
                431,
                f"request head is {head_size:,} bytes; the limit is {self.max_header_bytes:,}",
            )

        length = _content_length(event)
        if length is not None and length > self.max_body_bytes:
            return await self.fail(
                wire, conn, 413, f"body is {length:,} bytes; the limit is {self.max_body_bytes:,}"
            )
        body = bytearray()
        with trio.move_on_after(self.handshake_timeout) as scope:
            try:
                while True:
                    part = await self.next_event(wire, conn, reading_body=True)
                    if isinstance(part, h11.Data):
                        body += part.data
                        if len(body) > self.max_body_bytes:
                            return await self.fail(
                                wire,
                                conn,
                                413,
                                f"body is over the limit of {self.max_body_bytes:,} bytes",
                            )
                    elif isinstance(part, h11.EndOfMessage):
                        break
                    else:
                        return _Outcome.CLOSE
            except h11.RemoteProtocolError as exc:
                return await self.fail(wire, conn, exc.error_status_hint, f"malformed body: {exc}")
        if scope.cancelled_caught:
            logger.debug("%s: request body not complete within the timeout; dropped", peer)
            return _Outcome.CLOSE

        request = self.make_request(event, bytes(body), peer, wire.tls is not None)
        if request.is_websocket_upgrade:
            refusal = await self.check_upgrade(request)
            if refusal is not None:
                return await self.respond(wire, conn, request, refusal)
        try:
            response = await self.worker(request, self.runtime)
        except Exception:
            logger.exception("worker failed on %s %s", request.method, request.url)
            return await self.respond(wire, conn, request, _error_response(500))
        if not isinstance(response, Response):
            logger.error(
                "worker returned %s, not a trio_durable.Response, for %s %s",
                type(response).__name__,
                request.method,
                request.url,
            )
            return await self.respond(wire, conn, request, _error_response(500))
        if response.status == 101:
            return await self.upgrade(wire, conn, request, response)
        return await self.respond(wire, conn, request, response)

    async def check_upgrade(self, request: Request) -> Response | None:
        """Refuse a bad or unwelcome upgrade before the worker (and any object) sees it."""
        version = request.headers.get("sec-websocket-version", "").strip()
        if version != "13":
            return Response.text(
                f"unsupported Sec-WebSocket-Version {version!r}; this server speaks 13\n",
                status=426,
                headers={"sec-websocket-version": "13"},
            )
        key = request.headers.get("sec-websocket-key", "").strip()
        if not _is_valid_key(key):
            return _error_response(400, "missing or invalid Sec-WebSocket-Key")
        if self.allowed_origins is not None:
            origins = request.headers.get_all("origin")
            origin = origins[0] if len(origins) == 1 else None
            if len(origins) > 1 or origin not in self.allowed_origins:
                shown = "no Origin header" if not origins else f"origin {', '.join(origins)!r}"
                logger.info("refused a WebSocket upgrade from %s for %s", shown, request.url)
                return _error_response(403, f"{shown} is not allowed")
        if self.authenticate is None:
            return None
        try:
            refusal = await self.authenticate(request)
        except Exception:
            logger.exception("authenticate failed on the upgrade for %s", request.url)
            return _error_response(500)
        if refusal is None:
            return None
        if not isinstance(refusal, Response) or refusal.status == 101:
            logger.error(
                "authenticate must return None or a non-101 trio_durable.Response, got %r for %s",
                refusal,
                request.url,
            )
            return _error_response(500)
        return refusal

    def make_request(
        self, event: h11.Request, body: bytes, peer: tuple[str, int], is_tls: bool
    ) -> Request:
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in event.headers.raw_items()
        ]
        target = event.target.decode("latin-1")
        if target.startswith(("http://", "https://")):  # absolute form
            url = target
        else:
            host = Headers(headers).get("host") or self.server_address
            url = f"{'https' if is_tls else 'http'}://{host}{target}"
        return Request(
            method=event.method.decode("ascii"), url=url, headers=headers, body=body, client=peer
        )

    # ------------------------------------------------------------ answering

    async def fail(self, wire: _Wire, conn: h11.Connection, status: int, message: str) -> str:
        """Answer a client error and close the connection."""
        logger.debug("answering %d: %s", status, message)
        if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            response = _error_response(status, message)
            headers = [*response.headers.items_raw(), ("connection", "close")]
            with contextlib.suppress(h11.LocalProtocolError):
                data = conn.send(_h11_response(status, headers, len(response.body)))
                data = (data or b"") + (conn.send(h11.Data(data=response.body)) or b"")
                data += conn.send(h11.EndOfMessage()) or b""
                await wire.send_all(data)
                await wire.linger()
        return _Outcome.CLOSE

    async def respond(
        self, wire: _Wire, conn: h11.Connection, request: Request, response: Response
    ) -> str:
        """Write ``response``; keep the connection unless HTTP says otherwise."""
        status = response.status
        if status < 200:
            logger.error(
                "worker returned status %d for %s; only 101 is allowed below 200",
                status,
                request.url,
            )
            response = _error_response(500)
            status = 500
        has_body = status not in (204, 304)
        headers = [
            (name, value)
            for name, value in response.headers.items_raw()
            if name.lower() not in ("content-length", "transfer-encoding")
        ]
        try:
            head = _h11_response(status, headers, len(response.body) if has_body else None)
        except h11.LocalProtocolError as exc:
            logger.error("worker returned an invalid response for %s: %s", request.url, exc)
            response = _error_response(500)
            head = _h11_response(500, response.headers.items_raw(), len(response.body))
        data = conn.send(head) or b""
        if has_body and response.body and request.method != "HEAD":
            data += conn.send(h11.Data(data=response.body)) or b""
        data += conn.send(h11.EndOfMessage()) or b""
        await wire.send_all(data)
        return _Outcome.KEEP

    async def upgrade(
        self, wire: _Wire, conn: h11.Connection, request: Request, response: Response
    ) -> str:
        """Complete a WebSocket handshake and hand the socket to a transport."""
        if not request.is_websocket_upgrade:
            logger.error(
                "worker returned 101 for %s %s, which is not a WebSocket upgrade request",
                request.method,
                request.url,
            )
            abandon_pair(response.web_socket)
            return await self.respond(wire, conn, request, _error_response(500))
        # check_upgrade() has validated the key before the worker ran.
        key = request.headers.get("sec-websocket-key", "").strip()
        protocol = response.headers.get("sec-websocket-protocol")
        headers = [
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-accept", accept_key(key)),
            *(
                (name, value)
                for name, value in response.headers.items_raw()
                if name.lower() not in _UPGRADE_OWN_HEADERS
            ),
        ]
        try:
            switch = h11.InformationalResponse(
                status_code=101, headers=headers, reason=b"Switching Protocols"
            )
            home = self.connection_home()
        except h11.LocalProtocolError as exc:
            logger.error("worker returned invalid 101 headers for %s: %s", request.url, exc)
            abandon_pair(response.web_socket)
            return await self.respond(wire, conn, request, _error_response(500))
        except trio.ClosedResourceError:
            abandon_pair(response.web_socket)
            return await self.fail(wire, conn, 503, "the runtime is shutting down")
        transport = NetworkTransport(wire.sock, home, tls=wire.tls)
        url = "ws" + request.url[4:] if request.url.startswith("http") else request.url
        try:
            sink = bind_client_end(response.web_socket, transport, url=url, protocol=protocol)
        except (TypeError, RuntimeError) as exc:
            logger.error("cannot complete the WebSocket upgrade for %s: %s", request.url, exc)
            abandon_pair(response.web_socket)
            return await self.respond(wire, conn, request, _error_response(500))
        preamble = conn.send(switch) or b""
        trailing, _closed = conn.trailing_data
        # The transport writes the 101 itself, ahead of anything the object
        # already sent, so the handover needs no await and loses no message.
        transport.start(sink, initial=bytes(trailing), preamble=preamble)
        return _Outcome.HANDED_OVER


def _content_length(event: h11.Request) -> int | None:
    for name, value in event.headers:
        if name == b"content-length":
            return int(value)  # h11 has checked it is a valid number
    return None


def _is_valid_key(key: str) -> bool:
    # RFC 6455 section 4.1: base64 of 16 random bytes.
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


def _h11_response(
    status: int, headers: list[tuple[str, str]], content_length: int | None
) -> h11.Response:
    fields = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]
    if content_length is not None:
        fields.append((b"content-length", str(content_length).encode("ascii")))
    return h11.Response(status_code=status, headers=fields, reason=_reason(status))


def _error_response(status: int, message: str | None = None) -> Response:
    text = message if message is not None else _reason(status).decode("ascii")
    return Response.text(text + "\n", status=status)
