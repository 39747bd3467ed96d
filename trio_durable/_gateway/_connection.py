"""One accepted connection while it speaks HTTP/1.1; nothing that goes wrong leaves it.

:func:`serve_connection` is the task the accept loop starts for each
connection. It reads requests with h11 (keep-alive supported), turns each
into a :class:`~trio_durable.Request`, calls the worker, and writes the
:class:`~trio_durable.Response` back, until the connection closes or is
handed to a WebSocket transport.

The rule it enforces for the whole server: nothing that happens while
answering one connection may leave that connection's task. A refused
request gets its 4xx/5xx (``_http1.py``); an app's bad response gets a 500
(``encode_response`` checks it before anything is written); and, as a
backstop for what no one foresaw, *any* exception from the per-connection
path is caught here, logged with its traceback, answered with a 500 when no
response was started (the connection is closed otherwise), and the server
goes on with every other connection untouched. Only cancellation (and
``KeyboardInterrupt``/``SystemExit``) passes through.
"""

from __future__ import annotations

import enum
import logging
import socket
from typing import Final, Protocol

import attrs
import h11
import trio

from .._exceptions import ObjectResetError, ObjectUnavailableError, StorageError
from .._http import Request, Response
from .._limits import FIRST_REQUEST_GRACE
from .._websocket._socket import abandon_pair
from .._websocket._tls import TlsState
from ._handoff import CURRENT_HANDOFF, UpgradeHandoff
from ._http1 import (
    HttpError,
    InvalidResponseError,
    build_request,
    encode_error,
    encode_response,
    error_response,
    read_request,
)
from ._options import ServeOptions, Worker
from ._upgrade import ServedRuntime, Upgrades, check_upgrade
from ._wire import Wire, WriteTimeoutError

__all__ = ["Site", "serve_connection"]

logger: Final = logging.getLogger("trio_durable.gateway")


class _Waiting(Protocol):
    def request_begun(self) -> bool: ...


@attrs.frozen
class Site:
    """What every connection of one ``serve()`` call shares.

    Attributes:
        draining: Set when the server stops taking requests: each connection
            finishes the request it is serving (answered with
            ``connection: close``) and closes. One waiting for its next
            request with nothing received closes at once; one whose request
            has begun (a new connection's first, or bytes already received)
            gets :data:`~trio_durable._limits.FIRST_REQUEST_GRACE` to deliver
            it, and is answered. So does one whose next request has begun
            when an answer sent without ``connection: close`` (the drain
            began while it was being sent) is out.
        waiting: The cancel scopes of connections waiting for a request,
            each with its connection.
    """

    runtime: ServedRuntime
    worker: Worker
    options: ServeOptions
    upgrades: Upgrades
    draining: trio.Event = attrs.field(factory=trio.Event)
    waiting: dict[trio.CancelScope, _Waiting] = attrs.field(factory=dict)

    def drain(self) -> None:
        """Take no more requests: close the connections that wait for one."""
        self.draining.set()
        grace = trio.current_time() + FIRST_REQUEST_GRACE
        for scope, connection in self.waiting.items():
            if connection.request_begun():
                scope.deadline = min(scope.deadline, grace)
            else:
                scope.cancel()


class _Outcome(enum.Enum):
    """What the connection does after one request/response exchange."""

    KEEP = "keep"  # keep-alive: read the next request
    CLOSE = "close"  # close the connection
    HANDED_OVER = "handed over"  # the socket now belongs to a WebSocket transport


async def serve_connection(site: Site, sock: socket.socket, peer: tuple[str, int]) -> None:
    """Serve the requests of one connection, until it closes or is handed over.

    Never raises, except ``trio.Cancelled`` (cancelling it closes the
    connection), ``KeyboardInterrupt`` and ``SystemExit``.

    Args:
        site: What the connections of this ``serve()`` call share.
        sock: The accepted non-blocking socket; it is closed at the end
            unless a WebSocket transport took it.
        peer: The client's ``(host, port)``.
    """
    connection: _Connection | None = None
    try:
        failed = False
        try:
            connection = _Connection(site, sock, peer)
            await connection.run()
        except* (OSError, trio.BrokenResourceError) as group:
            # The client left or stopped reading: nothing to answer.
            for exc in group.exceptions:
                level = logging.INFO if isinstance(exc, WriteTimeoutError) else logging.DEBUG
                logger.log(level, "%s: connection ended: %s", peer, exc)
        except* Exception as group:
            failed = True
            error = group.exceptions[0] if len(group.exceptions) == 1 else group
            logger.error(
                "%s: unexpected error while serving the connection; answering 500",
                peer,
                exc_info=error,
            )
        if failed and connection is not None:
            await connection.answer_failure()
    finally:
        if connection is not None:
            connection.close()
        else:
            sock.close()


class _Connection:
    """The state of one connection while it speaks HTTP/1.1."""

    __slots__ = (
        "awaiting_first_request",
        "conn",
        "handed_over",
        "options",
        "peer",
        "scheme",
        "site",
        "wire",
    )

    def __init__(self, site: Site, sock: socket.socket, peer: tuple[str, int]) -> None:
        self.site = site
        self.options = site.options
        self.peer = peer
        ssl_context = site.options.ssl_context
        tls = TlsState(ssl_context) if ssl_context is not None else None
        self.wire = Wire(sock, tls, site.options.write_timeout)
        self.scheme = "https" if tls is not None else "http"
        self.conn = h11.Connection(
            h11.SERVER, max_incomplete_event_size=self.options.max_header_bytes
        )
        self.handed_over = False
        # True until the first read of a request ends: a new connection's
        # client sent its request with it, so a drain gives it the grace.
        self.awaiting_first_request = True

    def close(self) -> None:
        if not self.handed_over:
            self.wire.close()

    async def run(self) -> None:
        if self.wire.tls is not None:
            with trio.move_on_after(self.options.handshake_timeout) as scope:
                await self.wire.handshake()
            if scope.cancelled_caught:
                logger.debug("%s: TLS handshake timed out", self.peer)
                return
        conn = self.conn
        while True:
            outcome = await self.exchange()
            if outcome is not _Outcome.KEEP:
                return
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
            if self.site.draining.is_set() and not self.request_begun():
                # The drain began while the answer (kept alive) was being
                # sent. A next request already on its way is read (with the
                # grace) and answered with ``connection: close``; with none,
                # close, draining what the client may send meanwhile so
                # that the close does not reset the connection.
                await self.wire.linger()
                return

    async def exchange(self) -> _Outcome:
        """Read one request, call the worker, answer; say what happens next."""
        try:
            got = await self._read()
            if got is None:
                return _Outcome.CLOSE
            event, body = got
            request = build_request(
                event, body, peer=self.peer, scheme=self.scheme, server_address=self._local()
            )
        except HttpError as exc:
            return await self.fail(exc.status, exc.message)
        if request.is_websocket_upgrade:
            refusal = await check_upgrade(request, event.http_version, self.options)
            if refusal is not None:
                return await self.respond(request, refusal)
        handoff = self._offer(request)
        token = CURRENT_HANDOFF.set(handoff)
        try:
            response = await self.call_worker(request)
        finally:
            CURRENT_HANDOFF.reset(token)
        if handoff is not None and handoff.taken:
            # Another process owns the object and answered on this socket.
            self.wire.close()
            self.handed_over = True
            return _Outcome.HANDED_OVER
        if response.status == 101:
            error = self.site.upgrades.hand_over(self.wire, self.conn, request, response)
            if error is None:
                self.handed_over = True
                return _Outcome.HANDED_OVER
            response = error
        return await self.respond(request, response)

    async def _read(self) -> tuple[h11.Request, bytes] | None:
        """The next request, or None when the connection is to close without an answer.

        Raises:
            HttpError: The request is refused (503 when the server began
                draining while the request was still arriving).
        """
        site = self.site
        got = None
        with trio.CancelScope() as waiting:
            if site.draining.is_set():
                # Accepted just before the drain, or with its request already
                # begun: it gets the grace (the drain closes the others).
                waiting.deadline = trio.current_time() + FIRST_REQUEST_GRACE
            site.waiting[waiting] = self
            try:
                got = await read_request(self.wire, self.conn, self.options)
            finally:
                del site.waiting[waiting]
        self.awaiting_first_request = False
        if waiting.cancelled_caught and self._received_part():
            # Cut by the drain in the middle of a request: say so, rather than
            # leave the client to guess whether it was processed.
            raise HttpError(503, "the server is restarting; retry the request")
        return got

    def request_begun(self) -> bool:
        """Whether a request is on its way: the first, or bytes of one received."""
        if self.awaiting_first_request or self._received_part():
            return True
        try:
            return bool(self.wire.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except BlockingIOError:
            return False
        except OSError:
            return True  # let the read find out what happened

    def _received_part(self) -> bool:
        """Whether part of the next request (but not all of it) was read."""
        conn = self.conn
        if conn.their_state is h11.SEND_BODY:
            return True
        if conn.their_state is not h11.IDLE:
            return False
        pending_tls = self.wire.tls is not None and self.wire.tls.incoming.pending > 0
        return bool(conn.trailing_data[0]) or pending_tls

    def _offer(self, request: Request) -> UpgradeHandoff | None:
        """This connection, on offer to the process that owns the upgrade's object."""
        if not request.is_websocket_upgrade or self.wire.tls is not None:
            return None
        trailing, _closed = self.conn.trailing_data
        return UpgradeHandoff(request, self.wire.sock, bytes(trailing))

    def _local(self) -> str:
        """``host:port`` this connection reached: the authority when there is no Host."""
        address = self.wire.sock.getsockname()
        host, port = str(address[0]), int(address[1])
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    async def call_worker(self, request: Request) -> Response:
        try:
            response = await self.site.worker(request, self.site.runtime)
        except (StorageError, ObjectUnavailableError) as exc:
            # The database or the object's process is out of reach for now:
            # the client may retry, and nothing acknowledged is lost.
            logger.warning("%s %s: %s: %s", request.method, request.url, type(exc).__name__, exc)
            return _unavailable(exc)
        except ObjectResetError as exc:
            cause = _root_cause(exc)
            if not isinstance(cause, (StorageError, ObjectUnavailableError)):
                logger.exception("worker failed on %s %s", request.method, request.url)
                return error_response(500)
            # Reset because a commit could not reach the storage, or the
            # link to the object's process broke mid-call: same as above.
            logger.warning("%s %s: %s", request.method, request.url, exc)
            return _unavailable(cause)
        except Exception:
            logger.exception("worker failed on %s %s", request.method, request.url)
            return error_response(500)
        if not isinstance(response, Response):
            logger.error(
                "worker returned %s, not a trio_durable.Response, for %s %s",
                type(response).__name__,
                request.method,
                request.url,
            )
            return error_response(500)
        return response

    async def respond(self, request: Request, response: Response) -> _Outcome:
        """Write ``response``; keep the connection unless there is a reason to close it.

        The connection closes (``connection: close``, after the client has
        read the answer) when the server is draining, and after any answer
        but 101 to a request that asked for an upgrade: a proxy in front may
        treat the connection as a tunnel from the upgrade request on, so a
        request that follows on it must never reach us as a new request.
        """
        if response.web_socket is not None:
            # Not sent as a 101: the object must not keep the server end.
            abandon_pair(response.web_socket)
        close = self.site.draining.is_set() or "upgrade" in request.headers
        try:
            data = encode_response(self.conn, response, method=request.method, close=close)
        except InvalidResponseError as exc:
            logger.error("worker returned an invalid response for %s: %s", request.url, exc)
            data = encode_response(
                self.conn, error_response(500), method=request.method, close=close
            )
        await self.wire.send_all(data)
        if self.conn.our_state is not h11.MUST_CLOSE:
            return _Outcome.KEEP
        if not _client_closes(request):
            # The client may have sent more (pipelined requests, an upgrade's
            # first frames): closing with unread input would reset the
            # connection and could destroy the answer before it is read.
            await self.wire.linger()
        return _Outcome.CLOSE

    async def fail(self, status: int, message: str) -> _Outcome:
        """Answer a refused request and close the connection."""
        logger.debug("%s: answering %d: %s", self.peer, status, message)
        data = encode_error(self.conn, status, message)
        if data:
            await self.wire.send_all(data)
            await self.wire.linger()
        return _Outcome.CLOSE

    async def answer_failure(self) -> None:
        """After an unexpected error: a 500 if no response was started, then close."""
        if self.handed_over or self.wire.sock.fileno() == -1:
            return
        try:
            data = encode_error(self.conn, 500, "Internal Server Error")
            if data:
                await self.wire.send_all(data)
                await self.wire.linger()
        except Exception as exc:  # the connection is broken too; closing is all that is left
            logger.debug("%s: could not answer 500: %r", self.peer, exc)


def _client_closes(request: Request) -> bool:
    """Whether the client said it sends nothing after this request (``connection: close``)."""
    tokens = request.headers.get("connection", "").lower().split(",")
    return "close" in (token.strip() for token in tokens)


def _root_cause(exc: BaseException) -> BaseException:
    """The first StorageError or ObjectUnavailableError in ``exc``'s causes, else its last."""
    while exc.__cause__ is not None and not isinstance(
        exc, (StorageError, ObjectUnavailableError)
    ):
        exc = exc.__cause__
    return exc


def _unavailable(exc: BaseException) -> Response:
    """503 with ``retry-after``: the storage or the object's process is out of reach."""
    what = "the storage" if isinstance(exc, StorageError) else "the object"
    return Response.text(
        f"{what} is unavailable; retry shortly\n", status=503, headers={"retry-after": "1"}
    )
