"""``serve()``: listen, accept, and give each connection its own task.

The accept loop is the one place where a client can cost the server a file
descriptor before anything is known about it, so capacity is handled here:

* Over ``max_connections`` open connections (HTTP and WebSocket), a new
  connection is answered 503 (``retry-after: 1``) and closed.
* At the process's descriptor cap (``EMFILE``/``ENFILE``), ``accept()``
  fails and the connection stays in the kernel's backlog, so the listener
  stays readable: retrying would spin and log forever. Instead the gateway
  keeps one spare descriptor open from the start; at the cap it closes the
  spare, accepts one waiting connection into its place, answers it 503,
  closes it and opens the spare again, so clients in the backlog get an
  answer instead of silence. When even that fails it waits until one of its
  own connections closes (or a second passes) before trying again. Either
  way the condition is logged once, not on every attempt, and once more
  when accepting works again.

Each connection runs :func:`~trio_durable._gateway._connection.serve_connection`
in the gateway's nursery; that function never lets an error out, so one
connection cannot stop the server. See ``_connection.py``, ``_http1.py``
and ``_upgrade.py`` for what happens on a connection.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import socket
import ssl
import weakref
from collections.abc import Collection
from typing import Any, Final, NoReturn

import trio

from .._limits import (
    CLOSE_TIMEOUT,
    FRAME_TIMEOUT,
    HANDSHAKE_TIMEOUT,
    MAX_BODY_BYTES,
    MAX_CONNECTIONS,
    MAX_HEADER_BYTES,
    MAX_MESSAGE_SIZE,
    PARK_AFTER,
    SEND_BUFFER_LIMIT,
    WRITE_TIMEOUT,
)
from ._connection import Site, serve_connection
from ._handoff import register_upgrades
from ._options import Authenticator, ServeOptions, Worker
from ._upgrade import ServedRuntime, Upgrades
from ._wire import Wire

__all__ = ["Authenticator", "ServeOptions", "Worker", "serve"]

logger: Final = logging.getLogger("trio_durable.gateway")

# accept() errors that mean "out of descriptors": the spare descriptor helps.
_OUT_OF_DESCRIPTORS: Final = frozenset({errno.EMFILE, errno.ENFILE})
# accept() errors that mean "out of memory": wait, retry.
_OUT_OF_MEMORY: Final = frozenset({errno.ENOMEM, errno.ENOBUFS})
# accept() errors about one connection that is already gone: skip it.
_CONNECTION_GONE: Final = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM})
# Seconds to wait before retrying accept() when nothing tells us it may work.
_RETRY_AFTER: Final = 1.0
# Seconds between two log lines about accept() failing for lack of resources.
_LOG_INTERVAL: Final = 60.0
# At most this many over-capacity connections are answered 503 at once; more
# are closed without an answer, since answering costs a task each.
_MAX_REFUSING: Final = 64
_REFUSE_TIMEOUT: Final = 1.0
# At most this many connections waiting in the backlog are taken when draining.
_MAX_BACKLOG: Final = 1024

_BUSY_BODY: Final = b"Service Unavailable: too many open connections\n"
_BUSY_ANSWER: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: %d\r\nconnection: close\r\nretry-after: 1\r\n\r\n%s"
    % (len(_BUSY_BODY), _BUSY_BODY)
)


async def serve(
    runtime: ServedRuntime,
    worker: Worker,
    *,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None = None,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
    max_header_bytes: int = MAX_HEADER_BYTES,
    max_body_bytes: int = MAX_BODY_BYTES,
    park_after: float = PARK_AFTER,
    send_buffer_limit: int = SEND_BUFFER_LIMIT,
    max_message_size: int = MAX_MESSAGE_SIZE,
    close_timeout: float = CLOSE_TIMEOUT,
    write_timeout: float = WRITE_TIMEOUT,
    frame_timeout: float = FRAME_TIMEOUT,
    max_messages_per_second: float | None = None,
    allowed_origins: Collection[str | None] | None = None,
    authenticate: Authenticator | None = None,
    sock: socket.socket | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve HTTP/1.1 and WebSocket upgrades on one port; never returns.

    ::

        async with td.open_runtime(objects={"rooms": ChatRoom}) as runtime:
            await td.serve(runtime, worker, host="127.0.0.1", port=8787)

    Every option is checked when this is called, before anything listens: a
    bad value raises ``TypeError`` or ``ValueError`` naming the option.

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
        park_after: Seconds of silence before an idle WebSocket is parked
            (``0`` parks it as soon as it is idle).
        send_buffer_limit: Bytes a WebSocket may have waiting to be sent
            before its client is disconnected as too slow.
        max_message_size: Largest WebSocket message received; more closes
            the socket with 1009.
        close_timeout: Seconds to wait for a client's Close reply.
        write_timeout: Seconds an HTTP client may take no byte of a response
            the gateway is writing; then the connection is dropped and its
            task ends (default 30 s).
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
        sock: An already bound and listening socket to accept on instead of
            binding ``host:port`` (a cluster's workers share one; ``host``
            and ``port`` then only name it in logs). A drain leaves the
            connections waiting in its backlog to the other processes
            accepting on it.
        task_status: Gets the bound port (an ``int``) once listening, so
            ``port = await nursery.start(partial(serve, ...))`` works.

    Raises:
        TypeError: An option has the wrong type, or ``worker`` is not callable.
        ValueError: An option has a bad value.

    Cancelling ``serve`` closes the listeners and the connections still
    speaking HTTP; upgraded WebSockets stay open until the runtime closes.
    """
    if not callable(worker):
        raise TypeError(f"worker must be an async function, got {worker!r}")
    options = ServeOptions(
        host=host,
        port=port,
        ssl_context=ssl_context,
        handshake_timeout=handshake_timeout,
        max_connections=max_connections,
        max_header_bytes=max_header_bytes,
        max_body_bytes=max_body_bytes,
        park_after=park_after,
        send_buffer_limit=send_buffer_limit,
        max_message_size=max_message_size,
        close_timeout=close_timeout,
        write_timeout=write_timeout,
        frame_timeout=frame_timeout,
        max_messages_per_second=max_messages_per_second,
        allowed_origins=allowed_origins,
        authenticate=authenticate,
    )
    upgrades = Upgrades(runtime, options)
    register_upgrades(runtime, upgrades)
    gateway = _Gateway(Site(runtime, worker, options, upgrades), shared=sock is not None)
    listeners: list[trio.SocketListener] = []
    try:
        _gateways.setdefault(runtime, set()).add(gateway)
        if sock is not None:
            # Already bound and listening (a cluster's workers share one
            # socket): each serve() accepts on its own descriptor of it.
            sock.setblocking(False)
            listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(sock))]
        else:
            listeners = await trio.open_tcp_listeners(options.port, host=options.host)
        async with trio.open_nursery() as nursery:
            gateway.listening = len(listeners)
            for listener in listeners:
                nursery.start_soon(gateway.accept_until_drained, listener, nursery)
            bound = listeners[0].socket.getsockname()
            scheme = "https" if options.ssl_context is not None else "http"
            logger.info("serving on %s://%s", scheme, bound)
            task_status.started(bound[1])
            await trio.sleep_forever()
    finally:
        _gateways.get(runtime, set()).discard(gateway)
        gateway.close()
        for listener in listeners:
            await trio.aclose_forcefully(listener)
    raise AssertionError("unreachable")  # pragma: no cover


# The gateways of the serve() calls serving each runtime (for drain()).
_gateways: Final[weakref.WeakKeyDictionary[ServedRuntime, set[_Gateway]]] = (
    weakref.WeakKeyDictionary()
)


async def drain(runtime: ServedRuntime) -> None:
    """Stop taking requests on every ``serve()`` serving ``runtime``; wait for those in flight.

    The listening sockets are closed (with a socket shared by a cluster's
    workers, only this process's descriptor of it: the others go on
    accepting, and take the connections waiting in its backlog).
    Connections that completed their TCP handshake before that are still
    accepted (on a socket of this process alone) and get a moment (one
    second) to send their request; connections waiting for a next request
    close; each request being served is answered (with ``connection:
    close``). A request cut by the end of that moment while it was arriving
    is answered 503. WebSockets are not touched. Returns once no HTTP connection is left
    (bound the wait with ``trio.move_on_after``), then cancel the
    ``serve()`` calls. Returns at once when nothing serves ``runtime``.
    """
    gateways = list(_gateways.get(runtime, ()))
    # Before any checkpoint: no connection is accepted after this call began.
    for gateway in gateways:
        gateway.stop_accepting()
    async with trio.open_nursery() as nursery:
        for gateway in gateways:
            nursery.start_soon(gateway.wait_drained)


class _Gateway:
    """The accept side of one ``serve()`` call: counts, capacity, the spare descriptor.

    Args:
        site: What the connections share.
        shared: Whether the listening socket is shared with other processes
            (a cluster's workers): its backlog is theirs to take on a drain.
    """

    def __init__(self, site: Site, *, shared: bool) -> None:
        self.site = site
        self.shared = shared
        self.accepting: list[trio.CancelScope] = []
        self.listening = 0  # accept loops still running (drain waits for them)
        self.http_connections = 0
        self.refusing = 0
        # One descriptor held back so that, at the cap, a waiting client can
        # still be accepted and told 503 (see the module docstring).
        self.spare: int | None = _open_spare()
        # Set (and replaced) whenever one of our descriptors is released.
        self.released = trio.Event()
        # The current capacity episode (accept() failing for lack of
        # descriptors or memory): when it began (Trio time), whether it was
        # logged, and how many clients were answered 503 in it.
        self.at_cap_since: float | None = None
        self.cap_logged = False
        self.refused_at_cap = 0
        # When an episode was last logged: at most one a minute is, so that
        # a server hovering at the cap does not log every time it dips under.
        self.cap_logged_at = -math.inf

    @property
    def open_connections(self) -> int:
        return self.http_connections + len(self.site.upgrades)

    async def accept_until_drained(
        self, listener: trio.SocketListener, nursery: trio.Nursery
    ) -> None:
        """Accept until drained (``listening`` counts this loop already)."""
        scope = trio.CancelScope()
        self.accepting.append(scope)
        try:
            if self.site.draining.is_set():
                scope.cancel()
            with scope:
                await self.accept_loop(listener, nursery)
            if scope.cancelled_caught and not self.shared:
                # Closing our descriptor of a shared socket leaves its
                # backlog to the other processes; closing our own resets it.
                self._accept_backlog(listener.socket.fileno(), nursery)
            listener.socket.close()  # this process takes no new connection
        finally:
            self.listening -= 1
            self._release()

    def stop_accepting(self) -> None:
        """Begin the drain: stop the accept loops, close connections waiting for a request."""
        for scope in self.accepting:
            scope.cancel()
        self.site.drain()

    async def wait_drained(self) -> None:
        """Wait until the listeners are closed and no HTTP connection is left."""
        while self.listening or self.http_connections:
            await self.released.wait()

    def close(self) -> None:
        if self.spare is not None:
            os.close(self.spare)
            self.spare = None

    def _release(self) -> None:
        self.released.set()
        self.released = trio.Event()

    def _accept_backlog(self, listening_fd: int, nursery: trio.Nursery) -> None:
        """Take the connections already waiting in the kernel, before the listener closes.

        Closing a listening socket resets the connections in its backlog:
        their clients connected before the drain, and may have sent their
        request already. Served like any other, they get the grace of a
        first request. Bounded, so that a stream of new connections cannot
        keep this going.
        """
        for _ in range(_MAX_BACKLOG):
            try:
                accepted = _accept_now(listening_fd)
            except OSError:
                return  # out of descriptors, or the connection is gone: stop here
            if accepted is None:
                return
            self._start(accepted[0], accepted[1], nursery)

    # ----------------------------------------------------------- accepting

    async def accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        listening = listener.socket
        while True:
            try:
                accepted, address = await listening.accept()
            except OSError as exc:
                if exc.errno in _OUT_OF_DESCRIPTORS:
                    await self._at_descriptor_cap(listening, exc)
                    continue
                if exc.errno in _OUT_OF_MEMORY:
                    self._log_cap(exc, f"retrying in {_RETRY_AFTER:g} s")
                    await trio.sleep(_RETRY_AFTER)
                    continue
                if exc.errno in _CONNECTION_GONE:
                    continue
                raise
            self._log_recovered()
            if self.spare is None:
                self.spare = _open_spare()
            sock = socket.socket(fileno=accepted.detach())
            sock.setblocking(False)
            self._start(sock, address, nursery)

    def _start(self, sock: socket.socket, address: Any, nursery: trio.Nursery) -> None:
        """Serve an accepted connection in its own task, or refuse it (503) when over capacity."""
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = (str(address[0]), int(address[1]))
        if self.open_connections >= self.site.options.max_connections:
            if self.refusing < _MAX_REFUSING:
                self.refusing += 1
                nursery.start_soon(self.refuse, sock)
            else:
                sock.close()
                self._release()
            return
        self.http_connections += 1
        nursery.start_soon(self.handle, sock, peer)

    async def handle(self, sock: socket.socket, peer: tuple[str, int]) -> None:
        try:
            await serve_connection(self.site, sock, peer)
        finally:
            self.http_connections -= 1
            self._release()

    async def refuse(self, sock: socket.socket) -> None:
        """Answer 503 to a connection over ``max_connections``, then close it."""
        wire = Wire(sock, None, _REFUSE_TIMEOUT)
        try:
            with trio.move_on_after(_REFUSE_TIMEOUT):
                if self.site.options.ssl_context is not None:
                    return  # a TLS handshake per refusal would cost what we lack
                await wire.send_all(_BUSY_ANSWER)
                # Read what the client sent until it closes, so that closing
                # does not reset the connection before it read our answer.
                sock.shutdown(socket.SHUT_WR)
                while await wire.receive_some():
                    pass
        except (OSError, trio.BrokenResourceError):
            pass
        except Exception:  # as for any connection's task: log it, never end the server
            logger.exception("unexpected error while refusing a connection")
        finally:
            self.refusing -= 1
            wire.close()
            self._release()

    # ------------------------------------------------------ descriptor cap

    async def _at_descriptor_cap(self, listening: trio.socket.SocketType, exc: OSError) -> None:
        """accept() found no free descriptor: answer one waiting client 503, or wait.

        Linux fails ``accept()`` with EMFILE before it looks at the backlog,
        so the failure does not mean that anyone is waiting.
        """
        self._log_cap(exc, "answering new connections 503 until a descriptor is free")
        if self.spare is None:
            self.spare = _open_spare()
        if self.spare is None:
            # Nothing to answer with: wait for one of our descriptors to be
            # released, or a while, since others may free one.
            released = self.released
            with trio.move_on_after(_RETRY_AFTER):
                await released.wait()
            return
        if self._refuse_with_spare(listening.fileno()):
            self.refused_at_cap += 1
            await trio.lowlevel.checkpoint()
        else:
            # Nobody is waiting: try again (accept, or refuse) when someone is.
            await trio.lowlevel.wait_readable(listening)

    def _refuse_with_spare(self, listening_fd: int) -> bool:
        """Trade the spare descriptor for one waiting connection, answer it 503, close it.

        All of it happens without a checkpoint, so no other task can take
        the descriptor in between. Returns False when no connection was
        waiting (or another thread took the descriptor first).
        """
        assert self.spare is not None
        os.close(self.spare)
        self.spare = None
        try:
            accepted = _accept_now(listening_fd)
        except OSError:
            accepted = None
        client = accepted[0] if accepted is not None else None
        if client is not None:
            with client:
                if self.site.options.ssl_context is None:
                    _answer_now(client, _BUSY_ANSWER)
        self.spare = _open_spare()
        return client is not None

    def _log_cap(self, exc: OSError, action: str) -> None:
        """Log the first failure of an episode (at most one a minute); later ones at debug."""
        name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        now = trio.current_time()
        if self.at_cap_since is not None or now - self.cap_logged_at < _LOG_INTERVAL:
            if self.at_cap_since is None:
                self.at_cap_since, self.cap_logged, self.refused_at_cap = now, False, 0
            logger.debug("accept() failed with %s; %s", name, action)
            return
        self.at_cap_since, self.cap_logged, self.refused_at_cap = now, True, 0
        self.cap_logged_at = now
        if exc.errno in _OUT_OF_DESCRIPTORS:
            logger.error(
                "accept() failed with %s: out of file descriptors (%s); %s",
                name,
                _descriptor_limit(),
                action,
            )
        else:
            logger.error("accept() failed with %s (%s); %s", name, exc.strerror, action)

    def _log_recovered(self) -> None:
        if self.at_cap_since is None:
            return
        if not self.cap_logged:
            self.at_cap_since = None
            return
        logger.warning(
            "accepting connections again after %.1f s; %d answered 503 meanwhile "
            "(file descriptor limit reached)",
            trio.current_time() - self.at_cap_since,
            self.refused_at_cap,
        )
        self.at_cap_since = None


def _open_spare() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def _accept_now(listening_fd: int) -> tuple[socket.socket, Any] | None:
    """``accept()`` on the listening descriptor without a checkpoint: the socket and its peer.

    Returns None when no connection is waiting.
    """
    # A view of the listening socket's descriptor: detach() leaves it open.
    view = socket.socket(fileno=listening_fd)
    try:
        client, address = view.accept()
    except BlockingIOError:
        return None
    finally:
        view.detach()
    client.setblocking(False)
    return client, address


def _answer_now(client: socket.socket, answer: bytes) -> None:
    """Send a short answer and close our side without waiting for anything.

    What the client already sent is read first, so that closing does not
    reset the connection before it reads the answer.
    """
    with contextlib.suppress(OSError):
        client.send(answer)
        client.shutdown(socket.SHUT_WR)
        while client.recv(65536):
            pass


def _descriptor_limit() -> str:
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return "the descriptor limit"
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return f"RLIMIT_NOFILE is {soft:,}"
