"""WebSocket handles: :class:`WebSocket`, :class:`WebSocketPair` and friends.

A :class:`WebSocketPair` is two linked ends. An object keeps the *server*
end and returns the *client* end in ``Response.websocket(client)``; the
gateway then binds the client end to the network connection
(:func:`bind_client_end`), and from then on the server end talks to that
connection. Used in-process (tests, the in-memory client), the client end is
itself a working WebSocket.

A server end is used in one of two ways:

* **hibernatable**: ``ctx.accept_websocket(server, tags)``. The socket belongs
  to the runtime's socket hub, not to the object; its messages become
  ``websocket_message``/``websocket_close``/``websocket_error`` events that
  re-create the object when it hibernated.
* **standard**: ``server.accept()`` then ``async for message in server``,
  typically in ``ctx.wait_until`` work. The socket pins the object (no
  hibernation) until it closes.

Handles are small ``__slots__`` objects with only a few references: tens of
thousands of parked ones must stay cheap.
"""

from __future__ import annotations

import contextvars
import enum
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, Final, Protocol, TypeVar

import attrs
import trio

from .. import _codec
from .._core._live import LiveObject, Supervisor, current_object
from .._exceptions import LimitExceededError, WebSocketClosedError
from .._http import Response
from .._limits import AUTO_RESPONSE_MAX_BYTES, MAX_ATTACHMENT_BYTES, CloseCode
from ._frames import validate_close
from ._transport import DISCONNECTED_REASON, MessageSink, Transport

__all__ = [
    "WebSocket",
    "WebSocketPair",
    "SocketGroup",
    "SocketHome",
    "WebSocketRequestResponsePair",
    "abandon_pair",
    "bind_client_end",
    "bind_home",
    "current_home",
    "register_home",
    "watch_fetch",
]

T = TypeVar("T")

#: Messages a standard (non-hibernatable) end buffers before its reader waits.
_INBOX_LIMIT = 256
#: Messages sent to an end before its peer is connected (kept until then).
_EARLY_LIMIT = 1024


# ------------------------------------------------------------ the socket home
#
# A WebSocketPair is made by user code, with no runtime in sight. When one of
# its ends needs the runtime's help (a task in the connection nursery,
# pinning its object while it is open), it asks current_home(): the hub of
# the object whose code is running, or the hub bound to the current task by
# open_runtime. The hub registers itself with register_home().


class SocketHome(Protocol):
    """What a socket handle needs from its runtime's socket hub."""

    @property
    def connection_nursery(self) -> trio.Nursery:
        """The long-lived nursery where connections run (never an object's)."""

    @property
    def max_attachment_bytes(self) -> int:
        """The attachment limit of the runtime."""

    def pin(self, record: LiveObject, ws: WebSocket) -> None:
        """Keep ``record`` awake while ``ws`` (a standard or outbound socket) is open."""

    def unpin(self, record: LiveObject, ws: WebSocket) -> None:
        """``ws`` closed: it no longer keeps ``record`` awake."""


_bound: Final[contextvars.ContextVar[SocketHome | None]] = contextvars.ContextVar(
    "trio_durable_socket_home", default=None
)
_by_registry: Final[weakref.WeakKeyDictionary[Supervisor, SocketHome]] = (
    weakref.WeakKeyDictionary()
)


def register_home(registry: Supervisor, home: SocketHome) -> None:
    """Make ``home`` the socket home of every object of ``registry``."""
    _by_registry[registry] = home


def bind_home(home: SocketHome) -> None:
    """Make ``home`` the socket home of the calling task (and the tasks it starts)."""
    _bound.set(home)


def current_home() -> SocketHome:
    """The socket home of the running object's runtime, or of the current task.

    Raises:
        RuntimeError: no runtime is running here.
    """
    record = current_object()
    if record is not None:
        home: SocketHome | None = _by_registry.get(record.registry)
        if home is not None:
            return home
    home = _bound.get()
    if home is None:
        raise RuntimeError(
            "this WebSocket operation needs a running trio_durable runtime "
            "(call it inside an object, or inside `async with open_runtime(...)`)"
        )
    return home


# ------------------------------------------------ sockets accepted by a fetch
#
# A server end accepted during a fetch can only ever be connected if the
# fetch's response carries its client end out (Response.websocket(client)).
# A fetch that raises, or answers with anything else, leaves a socket no
# connection will serve: it would sit in get_websockets() and swallow
# broadcasts. So the server ends accepted while a fetch runs are collected
# (per task, like the fetch itself) and settled when it returns.

_accepted_in_fetch: Final[contextvars.ContextVar[list[WebSocket] | None]] = (
    contextvars.ContextVar("trio_durable_accepted_in_fetch", default=None)
)


def watch_fetch() -> Callable[[Response | None], None]:
    """Collect the server ends accepted by the fetch about to run in this task.

    Returns:
        ``settle(response)``, to call in the same task when the fetch is
        over, with its response (``None`` if it raised). Sockets whose client
        end the response carries are kept (handed to an enclosing fetch, if
        this one was called from a fetch, which settles them in turn); every
        other one is dropped: closed with 1006, gone from its object, its
        early messages discarded, sends to it refused.
    """
    accepted: list[WebSocket] = []
    token = _accepted_in_fetch.set(accepted)

    def settle(response: Response | None) -> None:
        _accepted_in_fetch.reset(token)
        if not accepted:
            return
        client = response.web_socket if response is not None else None
        enclosing = _accepted_in_fetch.get()
        for ws in accepted:
            if ws._state >= WebSocket.CLOSED:
                continue
            if client is not None and client is ws._peer:
                if enclosing is not None:
                    enclosing.append(ws)
            elif response is None:
                ws._drop(CloseCode.ABNORMAL, "the fetch that accepted this WebSocket raised")
            else:
                ws._drop(CloseCode.ABNORMAL, "the fetch that accepted it did not return its client")

    return settle


class SocketGroup(Protocol):
    """The hibernatable sockets of one object, as a socket handle sees them."""

    @property
    def key(self) -> tuple[str, str]:
        """The object's ``(namespace, hex id)``."""

    @property
    def max_attachment_bytes(self) -> int:
        """The attachment limit of the runtime that owns the group."""

    def remove(self, ws: WebSocket) -> None:
        """Forget a socket (it closed)."""

    async def deliver_message(self, ws: WebSocket, message: str | bytes) -> None:
        """Answer an auto-response, or run ``websocket_message``."""

    async def deliver_close(self, ws: WebSocket, code: int, reason: str, was_clean: bool) -> None:
        """Run ``websocket_close``."""

    async def deliver_error(self, ws: WebSocket, error: BaseException) -> None:
        """Run ``websocket_error``."""


class _Mode(enum.Enum):
    UNUSED = "unused"  # a fresh server end
    HIBERNATABLE = "hibernatable"
    STANDARD = "standard"  # server.accept(), or a client end used in-process
    NETWORK_CLIENT = "network client"  # a client end handed to the gateway


class WebSocket:
    """One end of a WebSocket connection.

    Get one from :class:`WebSocketPair`; not publicly constructible.

    Attributes:
        CONNECTING, OPEN, CLOSING, CLOSED: the values of :attr:`ready_state`,
            as in the browser API.
    """

    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3

    __slots__ = (
        "_attachment",
        "_auto_response_at",
        "_close_info",
        "_early",
        "_group",
        "_inbox",
        "_inbox_ready",
        "_is_client",
        "_mode",
        "_peer",
        "_pinned_by",
        "_state",
        "_tags",
        "_transport",
        "protocol",
        "url",
    )

    def __init__(self, *, is_client: bool) -> None:
        self._is_client = is_client
        self._mode = _Mode.UNUSED
        self._state = WebSocket.CONNECTING
        self._peer: WebSocket | None = None
        self._transport: Transport | None = None
        # Messages sent before the peer was connected, in order.
        self._early: deque[str | bytes] | None = None
        self._group: SocketGroup | None = None
        self._tags: tuple[str, ...] = ()
        self._attachment: bytes | None = None
        self._auto_response_at: float | None = None
        self._inbox: deque[str | bytes] | None = None
        self._inbox_ready: trio.Event | None = None
        self._close_info: tuple[int, str, bool] | None = None
        self._pinned_by: tuple[SocketHome, LiveObject] | None = None
        #: The URL of the WebSocket request, when known.
        self.url: str | None = None
        #: The negotiated subprotocol, if any.
        self.protocol: str | None = None

    def __repr__(self) -> str:
        end = "client" if self._is_client else "server"
        states = ("CONNECTING", "OPEN", "CLOSING", "CLOSED")
        return f"<WebSocket {end} {self._mode.value} {states[self._state]}>"

    # ------------------------------------------------------------ properties

    @property
    def ready_state(self) -> int:
        """``CONNECTING`` (0), ``OPEN`` (1), ``CLOSING`` (2) or ``CLOSED`` (3)."""
        return self._state

    @property
    def close_code(self) -> int | None:
        """The close code once the connection ended (``None`` before)."""
        return self._close_info[0] if self._close_info else None

    @property
    def close_reason(self) -> str | None:
        """The close reason once the connection ended (``None`` before)."""
        return self._close_info[1] if self._close_info else None

    # ----------------------------------------------------------- attachments

    def serialize_attachment(self, value: Any) -> None:
        """Keep a copy of ``value`` with the socket; it survives hibernation.

        ``value`` goes through the package's value codec, as stored values
        do (never pickle): ``bytes``, tuples, sets, datetimes... come back as
        themselves, an attrs instance as a ``dict`` of its fields unless
        `deserialize_attachment` is given its class. Passing ``None`` clears
        it.

        Raises:
            TypeError: a part of ``value`` cannot be kept (the message names
                its type and place: ``attachment["cb"] is a function; stored
                values must be data``); the previous attachment stays.
            LimitExceededError: the encoded value is over the limit (16,384
                bytes by default); the previous attachment stays.
        """
        if value is None:
            self._attachment = None
            return
        data = _codec.encode(value, where="attachment")
        group = self._group
        limit = _attachment_limit() if group is None else group.max_attachment_bytes
        _check_attachment(data, limit)
        self._attachment = data

    def deserialize_attachment(self, type: type[T] | None = None) -> Any:
        """A fresh copy of the attachment, structured into ``type`` when given.

        Without ``type`` the value comes back as it went in (an attrs
        instance as a ``dict`` of its fields); with it, through cattrs:
        unknown keys are ignored and missing fields take their defaults.
        Returns ``None`` when nothing was stored.
        """
        if self._attachment is None:
            return None
        return _codec.decode(self._attachment, type)

    # -------------------------------------------------------------- sending

    async def send(self, message: str | bytes) -> None:
        """Send a text (``str``) or binary (``bytes``) message.

        Never waits for the peer: the message is queued in order, and a peer
        that stops reading is disconnected rather than waited on. Inside an
        object, a message sent after a storage write leaves only once the
        write is committed (output gate).

        Raises:
            TypeError: ``message`` is neither ``str`` nor bytes-like.
            trio.ClosedResourceError: the socket is closing or closed.
        """
        if isinstance(message, bytearray | memoryview):
            message = bytes(message)
        elif not isinstance(message, str | bytes):
            raise TypeError(
                f"a WebSocket message is str (text) or bytes (binary), got {type(message).__name__}"
            )
        if self._state >= WebSocket.CLOSING:
            raise trio.ClosedResourceError("the WebSocket is closing or closed")
        if self._mode is _Mode.NETWORK_CLIENT:
            raise RuntimeError("this client end was handed to the gateway; use the server end")
        record = current_object()
        if record is not None:
            await record.output_gate.wait()
            if self._state >= WebSocket.CLOSING:
                raise trio.ClosedResourceError("the WebSocket closed while the message waited")
        transport = self._transport
        if transport is None:
            early = self._early
            if early is None:
                early = self._early = deque()
            if len(early) >= _EARLY_LIMIT:
                raise LimitExceededError(
                    f"{len(early):,} messages are waiting for the peer to connect; "
                    f"the limit is {_EARLY_LIMIT:,}"
                )
            early.append(message)
        else:
            transport.send_message(message)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake with ``code`` and ``reason``.

        Closing a socket that is already closing or closed does nothing, so
        ``close()`` inside ``websocket_close`` is fine.

        Raises:
            ValueError: ``code`` is not 1000-4999, or is 1004, 1005, 1006 or
                1015; or ``reason`` is over 123 UTF-8 bytes.
        """
        validate_close(code, reason)
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._state >= WebSocket.CLOSING:
            return
        if self._state == WebSocket.CONNECTING and self._transport is None:
            # Never connected: nothing to tell a peer.
            self._finish(code, reason, was_clean=True)
            return
        self._state = WebSocket.CLOSING
        if self._transport is not None:
            self._transport.send_close(code, reason)

    # ------------------------------------------------- standard (accept) API

    def accept(self) -> None:
        """Use this end directly: ``async for message in ws`` receives.

        For a server end this is the standard, non-hibernatable API: the
        socket pins its object (no hibernation) until it closes. For the
        client end of a pair used in-process, it connects the two ends.

        Raises:
            RuntimeError: the socket was already accepted (either way).
        """
        if self._mode is not _Mode.UNUSED:
            raise RuntimeError(f"this WebSocket was already accepted ({self._mode.value})")
        self._mode = _Mode.STANDARD
        self._inbox = deque()
        record = current_object()
        if record is not None and not self._is_client:
            current_home().pin(record, self)
        if not self._is_client:
            self._note_accepted()
        if self._is_client:
            _connect_in_memory(self, _accepted_server_end(self))
        elif self._peer is not None and self._peer._mode is _Mode.STANDARD:
            _connect_in_memory(self._peer, self)

    async def receive(self) -> str | bytes:
        """The next message of an accepted end.

        Raises:
            WebSocketClosedError: the connection ended (``code``/``reason``
                on the error).
            RuntimeError: the end was not accepted with :meth:`accept`.
        """
        if self._inbox is None:
            raise RuntimeError("call accept() before receiving from this WebSocket")
        while not self._inbox:
            if self._close_info is not None:
                code, reason, _ = self._close_info
                raise WebSocketClosedError(code, reason)
            if self._inbox_ready is None:
                self._inbox_ready = trio.Event()
            await self._inbox_ready.wait()
        await trio.lowlevel.checkpoint_if_cancelled()
        message = self._inbox.popleft()
        if self._inbox_ready is not None and len(self._inbox) < _INBOX_LIMIT:
            self._wake_inbox()
        return message

    def __aiter__(self) -> AsyncIterator[str | bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[str | bytes]:
        while True:
            try:
                yield await self.receive()
            except WebSocketClosedError:
                return

    def _wake_inbox(self) -> None:
        if self._inbox_ready is not None:
            self._inbox_ready.set()
            self._inbox_ready = None

    # ------------------------------------------------------------- inbound

    async def on_message(self, message: str | bytes) -> None:
        """(Transport side) a message arrived for this end."""
        if self._state >= WebSocket.CLOSED:
            return
        if self._mode is _Mode.HIBERNATABLE:
            group = self._group
            assert group is not None
            await group.deliver_message(self, message)
            return
        inbox = self._inbox
        if inbox is None:
            return
        # Bounded: a reader that does not keep up slows its peer down.
        while len(inbox) >= _INBOX_LIMIT and self._state < WebSocket.CLOSED:
            if self._inbox_ready is None:
                self._inbox_ready = trio.Event()
            await self._inbox_ready.wait()
        inbox.append(message)
        self._wake_inbox()

    async def on_close(self, code: int, reason: str, was_clean: bool) -> None:
        """(Transport side) the connection ended."""
        if self._state >= WebSocket.CLOSED:
            return
        self._finish(code, reason, was_clean)
        if self._mode is _Mode.HIBERNATABLE and self._group is not None:
            await self._group.deliver_close(self, code, reason, was_clean)

    async def on_error(self, error: BaseException) -> None:
        """(Transport side) the peer broke the protocol; the connection is gone."""
        if self._state >= WebSocket.CLOSED:
            return
        code = getattr(error, "code", 1006)
        reason = getattr(error, "reason", str(error))
        self._finish(code, reason, was_clean=False)
        if self._mode is _Mode.HIBERNATABLE and self._group is not None:
            await self._group.deliver_error(self, error)

    def _finish(self, code: int, reason: str, was_clean: bool) -> None:
        """Mark the end closed: leave its group, unpin its object, wake readers."""
        self._state = WebSocket.CLOSED
        self._close_info = (code, reason, was_clean)
        self._early = None
        if self._group is not None:
            self._group.remove(self)
        if self._pinned_by is not None:
            (home, record), self._pinned_by = self._pinned_by, None
            home.unpin(record, self)
        self._wake_inbox()

    def _take_early(self) -> deque[str | bytes]:
        early, self._early = self._early, None
        return early if early is not None else deque()

    # ------------------------------------- what the hub and the gateway use

    def _hand_over_state(self) -> tuple[tuple[str, ...], bytes | None, float | None]:
        """What moves with a hibernatable socket to another process: tags, attachment,
        the last auto-response's time (the connection and the URL move separately)."""
        return self._tags, self._attachment, self._auto_response_at

    def _moved_away(self) -> None:
        """The connection now lives in another process: this handle is done, silently."""
        self._transport = None
        self._finish(1012, "moved to another process", was_clean=True)

    @classmethod
    def _adopted(
        cls,
        group: SocketGroup,
        transport: Transport,
        *,
        tags: tuple[str, ...],
        attachment: bytes | None,
        auto_response_at: float | None,
        url: str | None,
        protocol: str | None,
    ) -> WebSocket:
        """The server end of a connection handed over by another process, open."""
        ws = cls(is_client=False)
        ws._mode = _Mode.HIBERNATABLE
        ws._group = group
        ws._tags = tags
        ws._attachment = attachment
        ws._auto_response_at = auto_response_at
        ws._transport = transport
        ws._state = WebSocket.OPEN
        ws.url = url
        ws.protocol = protocol
        return ws

    def _check_acceptable(self) -> None:
        """Refuse to accept a client end, an end used before, or a closed one."""
        if self._is_client:
            raise TypeError(
                f"accept_websocket() takes the server end of a WebSocketPair, got {self!r}"
            )
        if self._mode is not _Mode.UNUSED:
            raise RuntimeError(f"this WebSocket was already accepted ({self._mode.value})")
        if self._state >= WebSocket.CLOSED:
            raise trio.ClosedResourceError("this WebSocket is already closed")

    def _join_group(self, group: SocketGroup, tags: tuple[str, ...]) -> None:
        """Become a hibernatable socket of ``group``'s object, with ``tags``."""
        if self._attachment is not None:
            _check_attachment(self._attachment, group.max_attachment_bytes)
        self._mode = _Mode.HIBERNATABLE
        self._group = group
        self._tags = tags
        self._note_accepted()

    def _note_accepted(self) -> None:
        # Inside a fetch: it settles this socket when it returns (watch_fetch).
        accepted = _accepted_in_fetch.get()
        if accepted is not None:
            accepted.append(self)

    def _has_tag(self, tag: str) -> bool:
        return tag in self._tags

    def _auto_respond(self, response: str, at: float) -> None:
        """Send the auto-response ``response`` and remember when (epoch seconds)."""
        self._auto_response_at = at
        transport = self._transport
        if transport is not None and transport.is_open:
            transport.send_message(response)

    def _abort_connection(self) -> None:
        """Drop the connection under this end, if it has one (the runtime is stopping)."""
        if self._transport is not None:
            self._transport.abort()

    def _drop(self, code: int, reason: str) -> None:
        """End this socket now without telling its object, and drop its connection."""
        transport = self._transport
        self._finish(code, reason, was_clean=False)
        if transport is not None:
            transport.abort()

    def _pin_to(self, home: SocketHome, record: LiveObject) -> None:
        """Remember that this open socket keeps ``record`` awake (see ``SocketHome.pin``)."""
        self._pinned_by = (home, record)

    @classmethod
    def _outbound(cls, transport: Transport, *, url: str, protocol: str | None) -> WebSocket:
        """An open client end over ``transport``, in the standard API (outbound sockets)."""
        ws = cls(is_client=True)
        ws._mode = _Mode.STANDARD
        ws._inbox = deque()
        ws._state = WebSocket.OPEN
        ws._transport = transport
        ws.url = url
        ws.protocol = protocol
        return ws


class WebSocketPair(tuple[WebSocket, WebSocket]):
    """Two linked WebSocket ends: ``client, server = WebSocketPair()``.

    Keep ``server`` (accept it with ``ctx.accept_websocket(server)`` or
    ``server.accept()``) and return ``Response.websocket(client)``.
    """

    __slots__ = ()

    def __new__(cls) -> WebSocketPair:
        client = WebSocket(is_client=True)
        server = WebSocket(is_client=False)
        client._peer = server
        server._peer = client
        return super().__new__(cls, (client, server))

    @property
    def client(self) -> WebSocket:
        """The end handed to the caller in the 101 response."""
        return self[0]

    @property
    def server(self) -> WebSocket:
        """The end the object keeps."""
        return self[1]


def _check_pair_text(name: str, value: Any, limit: int) -> str:
    if not isinstance(value, str):
        raise TypeError(f"the auto-response {name} must be a str, got {type(value).__name__}")
    size = len(value.encode("utf-8"))
    if size > limit:
        raise LimitExceededError(
            f"the auto-response {name} is {size:,} bytes; the limit is {limit:,}"
        )
    if not value:
        raise ValueError(f"the auto-response {name} must not be empty")
    return value


def _check_request(instance: Any, attribute: Any, value: Any) -> None:
    _check_pair_text("request", value, AUTO_RESPONSE_MAX_BYTES)


def _check_response(instance: Any, attribute: Any, value: Any) -> None:
    _check_pair_text("response", value, AUTO_RESPONSE_MAX_BYTES)


@attrs.frozen
class WebSocketRequestResponsePair:
    """A text message the runtime answers by itself, without waking the object.

    ``ctx.set_websocket_auto_response(WebSocketRequestResponsePair("ping", "pong"))``:
    a text frame exactly equal to ``request`` gets ``response`` back. Each at
    most 2,048 UTF-8 bytes.
    """

    request: str = attrs.field(validator=_check_request)
    response: str = attrs.field(validator=_check_response)


# --------------------------------------------------------------- connecting


class _MemoryTransport:
    """Delivers one end's sends to the other end's sink, in-process, in order.

    Deliveries go through a queue drained by one task at a time (spawned in
    the hub's connection nursery on demand), because Trio may run freshly
    spawned tasks in any order.
    """

    __slots__ = ("_closing", "_draining", "_hub", "_queue", "_sender", "_target")

    def __init__(self, sender: WebSocket, target: WebSocket, hub: Any) -> None:
        self._sender = sender
        self._target = target
        self._hub = hub
        self._closing = False
        self._queue: deque[tuple[str, Any]] = deque()
        self._draining = False

    @property
    def is_open(self) -> bool:
        return not self._closing and self._target._state < WebSocket.CLOSED

    def send_message(self, message: str | bytes) -> None:
        if not self.is_open:
            raise trio.ClosedResourceError("the WebSocket is closed")
        target = self._target
        if target._mode is not _Mode.HIBERNATABLE and not self._queue:
            inbox = target._inbox
            if inbox is not None:
                inbox.append(message)
                target._wake_inbox()
            return
        self._enqueue("message", message)

    def send_close(self, code: int, reason: str) -> None:
        if self._closing:
            return
        self._closing = True
        # The other side answers a Close by itself: both ends end cleanly.
        self._enqueue("close", (code, reason, True))

    def abort(self) -> None:
        if self._target._state >= WebSocket.CLOSED and self._sender._state >= WebSocket.CLOSED:
            return
        self._closing = True
        self._enqueue("close", (1006, DISCONNECTED_REASON, False))

    def _enqueue(self, kind: str, value: Any) -> None:
        self._queue.append((kind, value))
        if not self._draining:
            self._draining = True
            self._hub.connection_nursery.start_soon(self._drain)

    async def _drain(self) -> None:
        try:
            while self._queue:
                kind, value = self._queue.popleft()
                if kind == "message":
                    await self._target.on_message(value)
                else:
                    code, reason, was_clean = value
                    await self._target.on_close(code, reason, was_clean)
                    await self._sender.on_close(code, reason, was_clean)
        finally:
            self._draining = False


def _connect_in_memory(client: WebSocket, server: WebSocket) -> None:
    """Link two ends of a pair in-process and flush what each sent early."""
    home = current_home()
    client._transport = _MemoryTransport(client, server, home)
    server._transport = _MemoryTransport(server, client, home)
    client._state = WebSocket.OPEN
    server._state = WebSocket.OPEN
    for end in (client, server):
        assert end._transport is not None
        for message in end._take_early():
            end._transport.send_message(message)


def _accepted_server_end(client: WebSocket) -> WebSocket:
    """The server end paired with ``client``, which must have been accepted."""
    server = client._peer
    assert server is not None
    if server._mode is _Mode.UNUSED:
        raise RuntimeError(
            "the server end of this WebSocketPair was never accepted: call "
            "ctx.accept_websocket(server) or server.accept() before returning the response"
        )
    return server


def abandon_pair(client: object) -> None:
    """Drop the server end of a pair whose upgrade failed after the object accepted it.

    Otherwise the object would keep a socket that no connection will ever
    serve (it would show in ``get_websockets()`` and buffer broadcasts).
    """
    if not isinstance(client, WebSocket) or not client._is_client:
        return
    if client._mode is not _Mode.UNUSED:
        return
    server = client._peer
    if server is not None and server._state < WebSocket.CLOSED:
        server._finish(1006, DISCONNECTED_REASON, was_clean=False)


def bind_client_end(
    client: WebSocket, transport: Transport, *, url: str, protocol: str | None
) -> MessageSink:
    """Hand the client end of a pair to a network connection (used by the gateway).

    From now on the server end sends through ``transport``, and what the
    connection receives goes to the returned sink (the server end).

    Raises:
        TypeError: ``client`` is not the client end of a WebSocketPair.
        RuntimeError: the client end was already used, or the server end was
            never accepted.
    """
    if not isinstance(client, WebSocket) or not client._is_client:
        raise TypeError(
            "Response.websocket() needs the client end of a trio_durable.WebSocketPair, "
            f"got {client!r}"
        )
    if client._mode is not _Mode.UNUSED:
        raise RuntimeError(f"this client end was already used ({client._mode.value})")
    server = _accepted_server_end(client)
    if server._state >= WebSocket.CLOSED:
        raise RuntimeError("the server end of this WebSocketPair is already closed")
    client._mode = _Mode.NETWORK_CLIENT
    client._peer = None
    server._peer = None
    server.url = url
    server.protocol = protocol
    server._transport = transport
    closing = server._state == WebSocket.CLOSING
    server._state = WebSocket.OPEN
    for message in server._take_early():
        transport.send_message(message)
    if closing:
        server._state = WebSocket.CLOSING
        transport.send_close(1000, "")
    return server


def _attachment_limit() -> int:
    # A socket not accepted yet: the limit of the runtime whose code runs, if any.
    try:
        return current_home().max_attachment_bytes
    except RuntimeError:
        return MAX_ATTACHMENT_BYTES


def _check_attachment(data: bytes, limit: int) -> None:
    if len(data) > limit:
        raise LimitExceededError(
            f"attachment is {len(data):,} bytes serialized; the limit is {limit:,}"
        )


# The client end of a pair travels in ``Response.websocket(client)`` back to
# the gateway, in the same process only.
_codec.register_handle_type(WebSocket, name="websocket")
