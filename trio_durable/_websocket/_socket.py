"""WebSocket handles: :class:`WebSocket`, :class:`WebSocketPair`, and the runtime's side of them.

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

``WebSocket`` is public, so what the runtime needs of a handle (the hub, the
gateway, outbound sockets) is not a method of it: it is the module-level
functions at the end of this module, the only code that touches a handle's
state. The jobs around the handle live next door:

========================  =====================================================
``_socket_home.py``       what a handle needs from its runtime, and finding it
``_fetch_watch.py``       the sockets a fetch accepted, settled when it returns
``_in_memory.py``         the transport of two ends used in one process
``_auto_response.py``     ``WebSocketRequestResponsePair``
``_checks.py``            argument checks: messages, attachments, tags
========================  =====================================================
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import AsyncIterator, Collection, Iterable
from typing import Any, Final, TypeVar

import trio

from .. import _codec
from .._core._live import LiveObject, current_object
from .._exceptions import LimitExceededError, WebSocketClosedError
from .._http import Response
from .._limits import CloseCode
from ._checks import check_attachment, check_message
from ._fetch_watch import note_accepted
from ._frames import validate_close
from ._in_memory import MemoryTransport
from ._socket_home import SocketGroup, SocketHome, current_attachment_limit, current_home
from ._transport import DISCONNECTED_REASON, MessageSink, Transport

__all__ = [
    "ServerEndDroppedError",
    "WebSocket",
    "WebSocketPair",
    "abandon_pair",
    "abort_socket_connection",
    "adopt_socket",
    "auto_response_time",
    "belongs_to",
    "bind_client_end",
    "check_acceptable",
    "drop_socket",
    "hand_over_state",
    "has_tag",
    "join_group",
    "moved_away",
    "outbound_socket",
    "pin_socket",
    "send_auto_response",
    "send_to_each",
    "settle_after_fetch",
    "socket_tags",
    "socket_transport",
]

T = TypeVar("T")

#: Messages a standard (non-hibernatable) end buffers before its reader waits.
_INBOX_LIMIT = 256
#: Messages sent to an end before its peer is connected (kept until then).
_EARLY_LIMIT = 1024


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
        self._group: SocketGroup[WebSocket] | None = None
        self._tags: tuple[str, ...] = ()
        self._attachment: bytes | None = None
        self._auto_response_at: float | None = None
        self._inbox: deque[str | bytes] | None = None
        self._inbox_ready: trio.Event | None = None
        self._close_info: tuple[int, str, bool] | None = None
        self._pinned_by: tuple[SocketHome[WebSocket], LiveObject] | None = None
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
        limit = current_attachment_limit() if group is None else group.max_attachment_bytes
        check_attachment(data, limit)
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
        message = check_message(message)
        if self._state >= WebSocket.CLOSING:
            raise trio.ClosedResourceError("the WebSocket is closing or closed")
        if self._mode is _Mode.NETWORK_CLIENT:
            raise RuntimeError("this client end was handed to the gateway; use the server end")
        record = current_object()
        if record is not None:
            await record.output_gate.wait()
            if self._state >= WebSocket.CLOSING:
                raise trio.ClosedResourceError("the WebSocket closed while the message waited")
        self._send_now(message)
        group = self._group
        if group is not None:
            group.note_sent()

    def _send_now(self, message: str | bytes) -> None:
        """Hand ``message`` to the connection now, or keep it until the peer connects.

        The caller has checked the message and the state (and waited for the
        output gate); a broadcast calls this for each of its sockets.

        Raises:
            trio.ClosedResourceError: the connection closed.
            LimitExceededError: too many messages wait for the peer to connect.
        """
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

    async def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Start the closing handshake with ``code`` and ``reason``.

        Closing a socket that is already closing or closed does nothing, so
        ``close()`` inside ``websocket_close`` is fine.

        Raises:
            ValueError: ``code`` is not 1000-4999, or is 1004, 1005, 1006 or
                1015; or ``reason`` is over 123 UTF-8 bytes; or either has
                the wrong type (that error is a ``TypeError`` too).
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
            pin_socket(self, current_home(), record)
        if not self._is_client:
            note_accepted(self)
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
        code = getattr(error, "code", CloseCode.ABNORMAL)
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


# ------------------------------------------------------------ connecting ends


class _HandleEnds:
    """How the in-memory transport sees a handle (`PairEnds`)."""

    __slots__ = ()

    def is_closed(self, end: WebSocket) -> bool:
        return end._state >= WebSocket.CLOSED

    def take_now(self, end: WebSocket, message: str | bytes) -> bool:
        if end._mode is _Mode.HIBERNATABLE:
            return False
        inbox = end._inbox
        if inbox is not None:
            inbox.append(message)
            end._wake_inbox()
        return True


_ENDS: Final = _HandleEnds()


def _connect_in_memory(client: WebSocket, server: WebSocket) -> None:
    """Link two ends of a pair in-process and flush what each sent early."""
    home = current_home()
    client._transport = MemoryTransport(client, server, home, _ENDS)
    server._transport = MemoryTransport(server, client, home, _ENDS)
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
        server._finish(CloseCode.ABNORMAL, DISCONNECTED_REASON, was_clean=False)


class ServerEndDroppedError(RuntimeError):
    """The runtime dropped the server end of a pair before the gateway bound its client end.

    Its object was reset or evicted between accepting the socket and the
    handshake's end: the client may try again.
    """


def bind_client_end(
    client: WebSocket, transport: Transport, *, url: str, protocol: str | None
) -> MessageSink:
    """Hand the client end of a pair to a network connection (used by the gateway).

    From now on the server end sends through ``transport``, and what the
    connection receives goes to the returned sink (the server end).

    Raises:
        TypeError: ``client`` is not the client end of a WebSocketPair.
        ServerEndDroppedError: the runtime dropped the server end meanwhile.
        RuntimeError: the client end was already used, or the server end was
            never accepted or is closed.
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
        close_info = server._close_info
        if close_info is not None and not close_info[2]:
            raise ServerEndDroppedError(
                f"the server end of this WebSocketPair was dropped: {close_info[1]}"
            )
        raise RuntimeError("the server end of this WebSocketPair is already closed")
    client._mode = _Mode.NETWORK_CLIENT
    client._peer = None
    server._peer = None
    closing = server._state == WebSocket.CLOSING
    _open_over(server, transport, url=url, protocol=protocol)
    for message in server._take_early():
        transport.send_message(message)
    if closing:
        server._state = WebSocket.CLOSING
        transport.send_close(CloseCode.NORMAL, "")
    return server


def outbound_socket(transport: Transport, *, url: str, protocol: str | None) -> WebSocket:
    """An open client end over ``transport``, in the standard API (outbound sockets)."""
    ws = WebSocket(is_client=True)
    ws._mode = _Mode.STANDARD
    ws._inbox = deque()
    _open_over(ws, transport, url=url, protocol=protocol)
    return ws


def _open_over(
    ws: WebSocket, transport: Transport, *, url: str | None, protocol: str | None
) -> None:
    """``ws`` is open over ``transport``, a connection to ``url`` speaking ``protocol``."""
    ws._transport = transport
    ws._state = WebSocket.OPEN
    ws.url = url
    ws.protocol = protocol


# ---------------------------------------------------- the runtime's side
#
# What the socket hub, the fetch watch and outbound sockets need of a handle.


def settle_after_fetch(ws: WebSocket, response: Response | None) -> bool:
    """A fetch that accepted ``ws`` returned ``response`` (``None``: it raised).

    Returns True when the socket is kept: the response carries its client
    end. Otherwise the socket is dropped (closed with 1006, gone from its
    object, its early messages discarded, sends to it refused) unless it was
    closed already; either way False.
    """
    if ws._state >= WebSocket.CLOSED:
        return False
    client = response.web_socket if response is not None else None
    if client is not None and client is ws._peer:
        return True
    if response is None:
        drop_socket(ws, CloseCode.ABNORMAL, "the fetch that accepted this WebSocket raised")
    else:
        drop_socket(ws, CloseCode.ABNORMAL, "the fetch that accepted it did not return its client")
    return False


def check_acceptable(ws: object) -> WebSocket:
    """``ws`` if ``ctx.accept_websocket`` may take it: an unused, open server end.

    Raises:
        TypeError: it is not a server end of a WebSocketPair.
        RuntimeError: it was already accepted.
        trio.ClosedResourceError: it is closed.
    """
    if not isinstance(ws, WebSocket) or ws._is_client:
        raise TypeError(f"accept_websocket() takes the server end of a WebSocketPair, got {ws!r}")
    if ws._mode is not _Mode.UNUSED:
        raise RuntimeError(f"this WebSocket was already accepted ({ws._mode.value})")
    if ws._state >= WebSocket.CLOSED:
        raise trio.ClosedResourceError("this WebSocket is already closed")
    return ws


def join_group(ws: WebSocket, group: SocketGroup[WebSocket], tags: tuple[str, ...]) -> None:
    """Make ``ws`` (checked by `check_acceptable`) a hibernatable socket of ``group``.

    Raises:
        LimitExceededError: its attachment is over the group's limit.
    """
    if ws._attachment is not None:
        check_attachment(ws._attachment, group.max_attachment_bytes)
    ws._mode = _Mode.HIBERNATABLE
    ws._group = group
    ws._tags = tags
    note_accepted(ws)


def adopt_socket(
    group: SocketGroup[WebSocket],
    transport: Transport,
    *,
    tags: tuple[str, ...],
    attachment: bytes | None,
    auto_response_at: float | None,
    url: str | None,
    protocol: str | None,
) -> WebSocket:
    """The server end of a connection handed over by another process, open."""
    ws = WebSocket(is_client=False)
    ws._mode = _Mode.HIBERNATABLE
    ws._group = group
    ws._tags = tags
    ws._attachment = attachment
    ws._auto_response_at = auto_response_at
    _open_over(ws, transport, url=url, protocol=protocol)
    return ws


def belongs_to(ws: WebSocket, key: tuple[str, str]) -> bool:
    """True when ``ws`` is a hibernatable socket of the object ``key`` names."""
    group = ws._group
    return group is not None and group.key == key


def socket_tags(ws: WebSocket) -> tuple[str, ...]:
    """The tags ``ws`` was accepted with."""
    return ws._tags


def has_tag(ws: WebSocket, tag: str) -> bool:
    """True when ``ws`` was accepted with ``tag``."""
    return tag in ws._tags


def auto_response_time(ws: WebSocket) -> float | None:
    """When (epoch seconds) ``ws`` last got the auto-response, or ``None``."""
    return ws._auto_response_at


def send_auto_response(ws: WebSocket, response: str, at: float) -> None:
    """Send the auto-response ``response`` on ``ws`` and remember when (epoch seconds)."""
    ws._auto_response_at = at
    transport = ws._transport
    if transport is not None and transport.is_open:
        transport.send_message(response)


def send_to_each(
    sockets: Iterable[WebSocket],
    message: str | bytes,
    tag: str | None,
    exclude: Collection[WebSocket],
) -> int:
    """Send ``message`` (checked) to each open socket, optionally only those with ``tag``.

    Never blocks, and ignores the output gate (the caller waited for it).
    Sockets that are closing or closed, in ``exclude``, or fail to take the
    message (closed meanwhile, or a peer that never connected with its early
    queue full) are skipped. Returns how many took it.
    """
    sent = 0
    closing = WebSocket.CLOSING
    for ws in sockets:
        if ws._state >= closing or ws in exclude or (tag is not None and tag not in ws._tags):
            continue
        try:
            ws._send_now(message)
        except (trio.ClosedResourceError, LimitExceededError):
            continue
        sent += 1
    return sent


def pin_socket(ws: WebSocket, home: SocketHome[WebSocket], record: LiveObject) -> None:
    """Keep ``record`` awake while ``ws`` (a standard or outbound socket) is open."""
    home.pin(record, ws)
    ws._pinned_by = (home, record)


def drop_socket(ws: WebSocket, code: int, reason: str) -> None:
    """End ``ws`` now without telling its object, and drop its connection."""
    transport = ws._transport
    ws._finish(code, reason, was_clean=False)
    if transport is not None:
        transport.abort()


def abort_socket_connection(ws: WebSocket) -> None:
    """Drop the connection under ``ws``, if it has one (the runtime is stopping)."""
    if ws._transport is not None:
        ws._transport.abort()


def socket_transport(ws: WebSocket) -> Transport | None:
    """The connection ``ws`` talks to, if it is connected."""
    return ws._transport


def hand_over_state(ws: WebSocket) -> tuple[tuple[str, ...], bytes | None, float | None]:
    """What moves with a hibernatable socket to another process: tags, attachment,
    the last auto-response's time (the connection and the URL move separately)."""
    return ws._tags, ws._attachment, ws._auto_response_at


def moved_away(ws: WebSocket) -> None:
    """``ws``'s connection now lives in another process: the handle is done, silently."""
    ws._transport = None
    ws._finish(CloseCode.SERVICE_RESTART, "moved to another process", was_clean=True)


# The client end of a pair travels in ``Response.websocket(client)`` back to
# the gateway, in the same process only.
_codec.register_handle_type(WebSocket, name="websocket")
