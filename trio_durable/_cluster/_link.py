"""Links between the processes of a deployment: framed calls, with file descriptors.

A :class:`Peer` carries calls in both directions over one stream socket
(a Unix socket between processes of one machine). Each frame is a 6-byte
header (payload length, number of file descriptors) and a payload, one
value of the value codec: ``[kind, call id, ...]``. File descriptors travel
with their frame as ``SCM_RIGHTS`` ancillary data (how a worker hands a
client's connection to another).

* ``call(op, body, fds)`` sends a request and waits for its reply. Calls are
  multiplexed: many may be in flight at once.
* The other side runs each request in a task of its own, so a request can
  be cancelled: cancelling ``call`` sends a *cancel* frame, which cancels the
  remote task.
* When the connection breaks, every call in flight raises
  :class:`LinkClosedError`, and every request being served is cancelled.
* A process that goes away closes its links gracefully (:meth:`Peer.finish`):
  it says *bye*, the other side says *bye* back and starts no call from then
  on (a new one raises :class:`LinkUnavailableError`: nothing was sent, the
  caller may try elsewhere); both sides answer the requests already sent
  (the stream is ordered, so none follows the other side's *bye*), then the
  connection closes. So a process leaving never leaves a call unanswered
  that it could still answer.

A connection starts with a handshake that proves both ends belong to the
same deployment: each side sends a random challenge and answers the
other's with an HMAC keyed by the deployment's link key (derived from the
secret kept in the deployment's storage). From then on every frame carries
a tag (keyed BLAKE2b over a sequence number and the frame) under keys of
that connection alone, one per direction: nothing on the network (or
another local user) can inject, replay, reorder or alter a call, even on a
TCP link between machines. Links are not encrypted: arguments and results
are readable by whoever can read the network between the nodes.
"""

from __future__ import annotations

import array
import contextlib
import hashlib
import hmac
import itertools
import logging
import os
import secrets
import socket
import struct
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import attrs
import trio

from .. import _codec

__all__ = [
    "Connection",
    "LinkClosedError",
    "LinkUnavailableError",
    "Peer",
    "RequestHandler",
    "handshake_client",
    "handshake_server",
    "link_key",
]

#: What a link connection is for, said in its handshake: calls (a :class:`Peer`),
#: or one proxied WebSocket connection (its bytes, once the upgrade is answered).
Purpose = str
CALLS: Final[Purpose] = "calls"
PROXY: Final[Purpose] = "proxy"

logger: Final = logging.getLogger("trio_durable.cluster")

_HEADER: Final = struct.Struct(">IH")
_SEQUENCE: Final = struct.Struct(">Q")
#: Bytes of each frame's authentication tag.
_TAG_BYTES: Final = 16
#: The largest frame a link accepts (a call's arguments are limited far below).
MAX_FRAME_BYTES: Final = 64 * 1024 * 1024
#: The largest frame before the other side proved itself (the handshake's are
#: a few hundred bytes): a stranger cannot make a process buffer more.
MAX_HANDSHAKE_FRAME_BYTES: Final = 4 * 1024
#: File descriptors one frame may carry.
MAX_FDS_PER_FRAME: Final = 64
_RECV_BYTES: Final = 256 * 1024
_ANCILLARY_BYTES: Final = socket.CMSG_SPACE(MAX_FDS_PER_FRAME * 4)

#: What serves the requests that arrive: ``(op, body, fds) -> (body, fds)``.
#: It owns the received descriptors (it must close or keep them).
RequestHandler = Callable[[str, Any, list[int]], Awaitable[tuple[Any, Sequence[int]]]]


class LinkClosedError(trio.BrokenResourceError):
    """The link to another process broke (it exited, or closed the connection)."""


class LinkUnavailableError(LinkClosedError):
    """The link was broken before a request could be sent: nothing ran."""


class Connection:
    """Frames over one connected stream socket; sends from any task, one reader.

    Args:
        sock: A connected ``AF_UNIX`` (or TCP, without descriptors) socket.
    """

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self._sock = sock
        self._send_lock = trio.Lock()
        self._buffer = bytearray()
        self._fds: deque[int] = deque()
        self._closed = False
        # Set by the handshake: keys of this connection and frame counters.
        self._send_key: bytes | None = None
        self._receive_key: bytes | None = None
        self._sent = 0
        self._received = 0

    def authenticate(self, send_key: bytes, receive_key: bytes) -> None:
        """Tag every frame from now on, and refuse any frame that is not tagged right."""
        self._send_key = send_key
        self._receive_key = receive_key

    def take_buffered(self) -> bytes:
        """Bytes received past the last frame (a proxied connection's first raw bytes)."""
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    def _tag(self, key: bytes, number: int, header: bytes | bytearray, payload: bytes) -> bytes:
        mac = hashlib.blake2b(_SEQUENCE.pack(number), key=key, digest_size=_TAG_BYTES)
        mac.update(header)
        mac.update(payload)
        return mac.digest()

    async def send(self, message: Any, fds: Sequence[int] = ()) -> None:
        """Send one frame; ``fds`` (which stay ours) travel with it.

        Raises:
            LinkClosedError: the connection is gone.
        """
        if len(fds) > MAX_FDS_PER_FRAME:
            raise ValueError(
                f"{len(fds)} descriptors in one frame; the limit is {MAX_FDS_PER_FRAME}"
            )
        payload = _codec.encode(message, where="link message")
        if len(payload) > MAX_FRAME_BYTES:
            raise ValueError(
                f"a link frame of {len(payload):,} bytes; the limit is {MAX_FRAME_BYTES:,}"
            )
        header = _HEADER.pack(len(payload), len(fds))
        async with self._send_lock:
            if self._send_key is None:
                data = memoryview(header + payload)
            else:
                tag = self._tag(self._send_key, self._sent, header, payload)
                self._sent += 1
                data = memoryview(header + payload + tag)
            try:
                if fds:
                    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                    sent = await self._sock.sendmsg([data], rights)
                    data = data[sent:]
                while data:
                    sent = await self._sock.send(data)
                    data = data[sent:]
            except (OSError, trio.ClosedResourceError) as exc:
                raise LinkClosedError(f"the link broke: {exc}") from exc

    async def receive(self) -> tuple[Any, list[int]]:
        """The next frame and its descriptors (now owned by the caller).

        Raises:
            LinkClosedError: the peer closed the connection or broke it.
        """
        while True:
            frame = self._take_frame()
            if frame is not None:
                return frame
            # Before the handshake, read no more than one largest frame at a time.
            size = _RECV_BYTES if self._receive_key is not None else MAX_HANDSHAKE_FRAME_BYTES
            try:
                data, ancillary, flags, _ = await self._sock.recvmsg(size, _ANCILLARY_BYTES)
            except (OSError, trio.ClosedResourceError) as exc:
                raise LinkClosedError(f"the link broke: {exc}") from exc
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds = array.array("i")
                    fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                    self._fds.extend(fds)
            if flags & socket.MSG_CTRUNC:
                raise LinkClosedError("descriptors were lost in transit (ancillary data truncated)")
            if not data:
                raise LinkClosedError("the peer closed the link")
            self._buffer += data

    def _take_frame(self) -> tuple[Any, list[int]] | None:
        buffer = self._buffer
        if len(buffer) < _HEADER.size:
            return None
        length, fd_count = _HEADER.unpack_from(buffer)
        if self._receive_key is None and length > MAX_HANDSHAKE_FRAME_BYTES:
            raise LinkClosedError(
                f"a frame of {length:,} bytes arrived before the handshake; the limit "
                f"is {MAX_HANDSHAKE_FRAME_BYTES:,}"
            )
        if length > MAX_FRAME_BYTES:
            raise LinkClosedError(
                f"a frame of {length:,} bytes arrived; the limit is {MAX_FRAME_BYTES:,}"
            )
        end = _HEADER.size + length
        tagged = end + (_TAG_BYTES if self._receive_key is not None else 0)
        if len(buffer) < tagged:
            return None
        if len(self._fds) < fd_count:
            raise LinkClosedError("a frame arrived without its descriptors")
        payload = bytes(buffer[_HEADER.size : end])
        if self._receive_key is not None:
            expected = self._tag(self._receive_key, self._received, buffer[: _HEADER.size], payload)
            if not hmac.compare_digest(expected, bytes(buffer[end:tagged])):
                raise LinkClosedError("a frame with a wrong tag arrived: the link is not trusted")
            self._received += 1
        del buffer[:tagged]
        fds = [self._fds.popleft() for _ in range(fd_count)]
        try:
            message = _codec.decode(payload)
        except ValueError as exc:
            _close_all(fds)
            raise LinkClosedError(f"an undecodable frame arrived: {exc}") from exc
        return message, fds

    def detach(self) -> socket.socket:
        """Stop framing: the connected socket, now the caller's (a proxied connection's)."""
        self._closed = True
        _close_all(self._fds)
        self._fds.clear()
        return socket.socket(fileno=self._sock.detach())

    def close(self) -> None:
        """Close the socket and any descriptor received but not handed out."""
        if self._closed:
            return
        self._closed = True
        _close_all(self._fds)
        self._fds.clear()
        self._sock.close()


def _close_all(fds: Sequence[int] | deque[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def link_key(secret: bytes) -> bytes:
    """The key that proves membership of a deployment on its links."""
    return hmac.new(secret, b"trio_durable link v2", hashlib.sha256).digest()


def _mac(key: bytes, label: bytes, *parts: bytes) -> bytes:
    """An HMAC of length-prefixed parts (no two lists of parts share an input)."""
    mac = hmac.new(key, label, hashlib.sha256)
    for part in parts:
        mac.update(_SEQUENCE.pack(len(part)))
        mac.update(part)
    return mac.digest()


def _session_keys(key: bytes, challenges: tuple[bytes, bytes]) -> tuple[bytes, bytes]:
    """Keys of one connection: (client to server, server to client)."""
    return _mac(key, b"client to server", *challenges), _mac(key, b"server to client", *challenges)


async def _receive_plain(connection: Connection) -> Any:
    message, fds = await connection.receive()
    _close_all(fds)
    return message


async def handshake_client(
    connection: Connection, key: bytes, member_id: str, purpose: Purpose = CALLS
) -> None:
    """Prove ourselves to the server and check its proof (the client side of a new link).

    Afterwards every frame is tagged with this connection's keys.

    Raises:
        LinkClosedError: the server refused us, failed to prove itself, or went away.
    """
    message = await _receive_plain(connection)
    if not (
        isinstance(message, list)
        and len(message) == 2
        and message[0] == "challenge"
        and isinstance(message[1], bytes)
    ):
        raise LinkClosedError(f"unexpected first frame on a link: {message!r:.80}")
    theirs, ours = message[1], secrets.token_bytes(32)
    said = (member_id.encode(), purpose.encode())
    proof = _mac(key, b"client", theirs, ours, *said)
    await connection.send(["proof", member_id, purpose, ours, proof])
    reply = await _receive_plain(connection)
    if not (
        isinstance(reply, list)
        and len(reply) == 2
        and reply[0] == "welcome"
        and isinstance(reply[1], bytes)
        and hmac.compare_digest(reply[1], _mac(key, b"server", theirs, ours, *said))
    ):
        raise LinkClosedError("the peer refused our proof of membership or failed to prove its own")
    to_server, to_client = _session_keys(key, (theirs, ours))
    connection.authenticate(send_key=to_server, receive_key=to_client)


async def handshake_server(connection: Connection, key: bytes) -> tuple[str, Purpose]:
    """Check a new client's proof and give ours: its ``(member id, purpose)``.

    Afterwards every frame is tagged with this connection's keys.

    Raises:
        LinkClosedError: the client did not prove it belongs to the deployment.
    """
    ours = secrets.token_bytes(32)
    await connection.send(["challenge", ours])
    message = await _receive_plain(connection)
    if not (
        isinstance(message, list)
        and len(message) == 5
        and message[0] == "proof"
        and isinstance(message[1], str)
        and message[2] in (CALLS, PROXY)
        and isinstance(message[3], bytes)
        and isinstance(message[4], bytes)
    ):
        raise LinkClosedError("a client failed to prove it belongs to this deployment")
    _, member_id, purpose, theirs, proof = message
    said = (member_id.encode(), purpose.encode())
    if not hmac.compare_digest(proof, _mac(key, b"client", ours, theirs, *said)):
        raise LinkClosedError("a client failed to prove it belongs to this deployment")
    await connection.send(["welcome", _mac(key, b"server", ours, theirs, *said)])
    to_server, to_client = _session_keys(key, (ours, theirs))
    connection.authenticate(send_key=to_client, receive_key=to_server)
    return member_id, purpose


@attrs.define(eq=False)
class _Pending:
    done: trio.Event = attrs.field(factory=trio.Event)
    reply: tuple[str, Any, list[int]] | None = None


class Peer:
    """Calls in both directions over one :class:`Connection`.

    Start :meth:`run` in a nursery (it reads until the connection breaks);
    then :meth:`call` from any task.

    Args:
        connection: The connection, handshake done.
        handler: Serves the requests the other side sends.
        name: Says who is at the other end, in logs and errors.
    """

    def __init__(self, connection: Connection, handler: RequestHandler, *, name: str) -> None:
        self.connection = connection
        self.name = name
        self._handler = handler
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._serving: dict[int, trio.CancelScope] = {}
        self._broken: LinkClosedError | None = None
        # Graceful close: no call starts once closing; bye_received says the
        # other side will send no more requests; changed wakes finish().
        self._closing = False
        self._bye_received = False
        self._changed = trio.Event()
        self._ended = trio.Event()
        self._nursery: trio.Nursery | None = None

    @property
    def is_broken(self) -> bool:
        """True once the connection broke or is closing (no new call can succeed)."""
        return self._broken is not None or self._closing

    async def run(self) -> None:
        """Read frames until the connection breaks, serving requests in their own tasks."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    while True:
                        message, fds = await self.connection.receive()
                        self._dispatch(nursery, message, fds)
                except LinkClosedError as exc:
                    self._break(exc)
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            self._break(LinkClosedError(f"the link to {self.name} closed"))
            self.connection.close()
            self._ended.set()

    def _break(self, error: LinkClosedError) -> None:
        if self._broken is None:
            self._broken = error
        for pending in self._pending.values():
            if not pending.done.is_set():
                pending.done.set()
        self._note_change()

    def _note_change(self) -> None:
        self._changed.set()

    async def finish(self) -> None:
        """Close gracefully: answer what the other side sent, wait for our calls, then close.

        Starts no call from now on, and returns once the connection is
        closed. If cancelled (bound it with ``trio.move_on_after``), it
        closes the connection at once: calls still in flight on either side
        then fail as on a break. :meth:`run` must be running.
        """
        try:
            if self._nursery is not None:
                self._start_closing()
                await self._ended.wait()
        finally:
            self.connection.close()

    def _start_closing(self) -> None:
        if self._closing or self._broken is not None or self._nursery is None:
            return
        self._closing = True
        self._nursery.start_soon(self._close_when_quiet)

    async def _close_when_quiet(self) -> None:
        with contextlib.suppress(LinkClosedError):
            await self.connection.send(["bye", 0])
        while not (self._bye_received and not self._serving and not self._pending):
            if self._broken is not None:
                return
            await self._changed.wait()
            self._changed = trio.Event()
        self.connection.close()  # run() sees it and ends

    def _dispatch(self, nursery: trio.Nursery, message: Any, fds: list[int]) -> None:
        if not isinstance(message, list) or len(message) < 2:
            _close_all(fds)
            raise LinkClosedError(f"a malformed frame from {self.name}: {message!r:.80}")
        kind, call_id = message[0], message[1]
        if kind == "req" and len(message) == 4:
            scope = trio.CancelScope()
            self._serving[call_id] = scope
            nursery.start_soon(self._serve, call_id, message[2], message[3], fds, scope)
        elif kind in ("ok", "err") and len(message) == 3:
            pending = self._pending.get(call_id)
            if pending is None:
                _close_all(fds)  # a reply to a call that was cancelled meanwhile
                return
            pending.reply = (kind, message[2], fds)
            pending.done.set()
        elif kind == "cancel":
            _close_all(fds)
            serving = self._serving.get(call_id)
            if serving is not None:
                serving.cancel()
        elif kind == "bye":
            # The other side sends no request after this one; ours stop now.
            _close_all(fds)
            self._bye_received = True
            self._start_closing()
            self._note_change()
        else:
            _close_all(fds)
            raise LinkClosedError(f"an unknown frame from {self.name}: {kind!r}")

    async def _serve(
        self, call_id: int, op: str, body: Any, fds: list[int], scope: trio.CancelScope
    ) -> None:
        reply: list[Any] | None = None
        reply_fds: Sequence[int] = ()
        try:
            with scope:
                try:
                    result, reply_fds = await self._handler(op, body, fds)
                    reply = ["ok", call_id, result]
                except Exception as exc:
                    logger.exception("serving %r from %s failed", op, self.name)
                    reply = ["err", call_id, f"{type(exc).__name__}: {exc}"]
            if reply is None:  # cancelled by the caller: it waits for nothing
                return
            with contextlib.suppress(LinkClosedError):
                await self.connection.send(reply, reply_fds)
        finally:
            self._serving.pop(call_id, None)
            self._note_change()

    async def call(self, op: str, body: Any, fds: Sequence[int] = ()) -> tuple[Any, list[int]]:
        """Send a request and wait for its reply: ``(body, descriptors)``.

        Cancelling the call cancels the request on the other side.

        Raises:
            LinkUnavailableError: the link was broken before the request
                was sent (nothing ran).
            LinkClosedError: the link broke before the reply came (the
                request may or may not have run).
            RuntimeError: the other side failed to serve it (a bug there).
        """
        if self._broken is not None:
            raise LinkUnavailableError(str(self._broken)) from self._broken
        if self._closing:
            raise LinkUnavailableError(f"the link to {self.name} is closing")
        call_id = next(self._ids)
        pending = _Pending()
        self._pending[call_id] = pending
        try:
            try:
                await self.connection.send(["req", call_id, op, body], fds)
            except LinkClosedError as exc:
                raise LinkUnavailableError(str(exc)) from exc
            try:
                await pending.done.wait()
            except trio.Cancelled:
                if pending.reply is not None:
                    _close_all(pending.reply[2])  # the reply came too late for us
                with (
                    trio.CancelScope(shield=True),
                    trio.move_on_after(1),
                    contextlib.suppress(LinkClosedError),
                ):
                    await self.connection.send(["cancel", call_id])
                raise
        finally:
            del self._pending[call_id]
            self._note_change()
        if pending.reply is None:
            assert self._broken is not None
            raise self._broken
        kind, result, reply_fds = pending.reply
        if kind == "err":
            _close_all(reply_fds)
            raise RuntimeError(f"{self.name} failed to serve {op!r}: {result}")
        return result, reply_fds
