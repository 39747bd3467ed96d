"""The network transport: one WebSocket connection on a TCP (or TLS) socket.

A :class:`NetworkTransport` carries one connection accepted by the gateway
(``_gateway.py``) after the opening handshake. It implements
:class:`~trio_durable._websocket._transport.Transport` for the handle that an
object holds, and delivers what it reads to that handle's
:class:`~trio_durable._websocket._transport.MessageSink`.

**Parked while idle.** A connection without traffic holds no Trio task, no
:class:`~trio_durable._websocket._frames.FrameCodec` and no buffer: only the
stdlib socket, registered in the runtime's shared
:class:`~trio_durable._websocket._parking.SocketParking`, and this small
``__slots__`` object. When bytes arrive, the parking calls `_wake`, which
starts a *reader* task in the runtime's connection nursery. The reader builds
a fresh codec, reads with non-blocking ``recv`` and
`trio.lowlevel.wait_readable`, delivers messages to the sink one at a time,
answers Pings and the peer's Close by itself, and parks the socket again once
the codec is idle and nothing arrived for ``park_after`` seconds.

The reader uses one cancel scope per wake-up, not one per message: the
scope's deadline is finite only while the reader waits for bytes, so it can
never cancel a sink call half way.

**Sends never block.** `NetworkTransport.send_message` serializes the frame and
tries a direct non-blocking ``send``. What the kernel does not take goes into
a bounded per-connection buffer, drained by a *writer* task started on
demand. A peer that lets the buffer exceed ``send_buffer_limit`` is dropped
(see `NetworkTransport._overflow`): a broadcast never waits for a slow
client. One message bigger than the limit is accepted into an empty buffer,
so a healthy client can still receive a big message; the bound is therefore
``send_buffer_limit`` plus one message.

**TLS.** A TLS connection uses an ``ssl.SSLObject`` over two memory BIOs
(:class:`TlsState`), driven on the same raw socket, so it is parked like a
plain one: parking is safe exactly when the TLS layer holds no undecrypted
bytes and no decrypted bytes (``incoming.pending == 0`` and
``ssl_object.pending() == 0``), which the reader checks before parking. A
parked TLS connection also keeps its ``SSLObject`` (OpenSSL's session state,
a few KiB), so it costs more than a plain one but still has no task. Buffered
output is ciphertext, so when a slow TLS client overflows its buffer no Close
frame can be added after the dropped records: it is just disconnected.

**Limits on the peer.** A peer that goes silent in the middle of a frame
holds a reader task and a codec (a parked connection holds neither): after
``frame_timeout`` seconds without a byte it is closed with 1008. With
``max_messages_per_second`` set, each connection has a token bucket (one
second's worth of messages, refilled continuously); a message (or Ping or
Pong) that finds it empty closes the connection with 1008. The bucket is
dropped while it is full, so a parked connection keeps nothing for it.

Terminal events reach the sink exactly once: ``on_close`` for a Close frame
(``was_clean=True``) or a dropped connection (1006), ``on_error`` with a
:class:`WebSocketProtocolError` when the peer broke the protocol (the Close
frame with the right code was already sent; 1008 for the limits above).
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from itertools import islice
from typing import Final

import trio

from .._exceptions import WebSocketProtocolError
from ._frames import (
    DEFAULT_MAX_MESSAGE_SIZE,
    BinaryMessage,
    CloseReceived,
    FrameCodec,
    Ping,
    Pong,
    ProtocolFailure,
    TextMessage,
    WsEvent,
    serialize_close,
    serialize_message,
)
from ._parking import SocketParking
from ._transport import DISCONNECTED_REASON, MessageSink

__all__ = [
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_FRAME_TIMEOUT",
    "DEFAULT_PARK_AFTER",
    "DEFAULT_SEND_BUFFER_LIMIT",
    "ConnectionHome",
    "NetworkTransport",
    "TlsState",
]

logger: Final = logging.getLogger("trio_durable.websocket")

#: Seconds of silence after which an idle connection is parked.
DEFAULT_PARK_AFTER: Final = 1.0
#: Bytes of unsent output after which a slow client is disconnected.
DEFAULT_SEND_BUFFER_LIMIT: Final = 1024 * 1024
#: Seconds to wait for the peer's Close reply (or to flush ours) before dropping TCP.
DEFAULT_CLOSE_TIMEOUT: Final = 5.0
#: Seconds a peer may stay silent in the middle of a frame (or of a fragmented
#: message, or of a TLS record) before it is closed with 1008.
DEFAULT_FRAME_TIMEOUT: Final = 30.0

#: Close code for a peer that breaks a policy of ours (message rate, frame timeout).
POLICY_VIOLATION_CODE: Final = 1008

#: Close code and reason sent to a client that does not read fast enough.
SLOW_CLIENT_CODE: Final = 1013
SLOW_CLIENT_REASON: Final = "slow client: send buffer full"

_RECV_SIZE: Final = 65536
# Buffers handed to one sendmsg call (Linux IOV_MAX is 1024).
_MAX_IOV: Final = 512
# A Close frame without a status code: the reply to one.
_EMPTY_CLOSE: Final = b"\x88\x00"

# Bits of NetworkTransport._flags. One int rather than a slot per flag: every
# parked connection pays for each slot.
_HOLD: Final = 1 << 0  # not started: output is held (plaintext) until start()
_READER: Final = 1 << 1  # a reader task owns the socket's reading side
_WRITER: Final = 1 << 2  # a writer task drains the send buffer
_PARKED: Final = 1 << 3  # registered in the parking
_WAITING: Final = 1 << 4  # the reader is inside wait_readable
_CLOSE_SENT: Final = 1 << 5
_CLOSE_RECEIVED: Final = 1 << 6
_CLOSE_WHEN_FLUSHED: Final = 1 << 7  # close TCP once the buffer is empty
_DELIVERED: Final = 1 << 8  # the terminal event went to the sink (or never will)


class TlsState:
    """A server-side TLS session over memory BIOs, driven on a raw socket.

    The gateway makes it, does the handshake and the HTTP exchange through
    it, then hands it to the :class:`NetworkTransport` of an upgraded
    connection.

    Args:
        context: The server's ``ssl.SSLContext``.
    """

    __slots__ = ("incoming", "obj", "outgoing")

    def __init__(self, context: ssl.SSLContext) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = context.wrap_bio(self.incoming, self.outgoing, server_side=True)

    @property
    def is_empty(self) -> bool:
        """True when no received byte waits inside TLS (undecrypted or decrypted)."""
        return self.incoming.pending == 0 and self.obj.pending() == 0

    def encrypt(self, data: bytes) -> bytes:
        """Turn plaintext into TLS records (never blocks: the BIO grows).

        Raises:
            ssl.SSLError: The TLS session is broken.
        """
        self.obj.write(data)
        return self.outgoing.read()

    def recv(self, sock: socket.socket) -> tuple[bytes, bytes]:
        """Read plaintext, pulling ciphertext from ``sock`` as needed.

        Returns:
            ``(plaintext, to_send)``: ``b""`` plaintext means the peer ended
            the stream; ``to_send`` is TLS output produced by reading (session
            tickets, key updates, alerts) that the caller must send in order.

        Raises:
            BlockingIOError: Nothing to read now; wait for the socket.
            OSError: The socket failed (also ``ssl.SSLError``).
        """
        obj = self.obj
        while True:
            try:
                data = obj.read(_RECV_SIZE)
            except ssl.SSLWantReadError:
                pass
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b"", self.outgoing.read()
            else:
                return data, self.outgoing.read()
            raw = sock.recv(_RECV_SIZE)
            if raw:
                self.incoming.write(raw)
            else:
                self.incoming.write_eof()


class ConnectionHome:
    """What the network connections of one gateway share.

    One per `~trio_durable._websocket._gateway.serve` call, so that the
    per-connection object only needs one reference for all of it.

    Args:
        nursery: The runtime's long-lived connection nursery (readers,
            writers and terminal deliveries run there).
        parking: The runtime's shared socket parking.
        park_after: Seconds of silence before an idle connection is parked.
        send_buffer_limit: Bytes of unsent output before a slow client is
            disconnected.
        max_message_size: Largest received message; bigger closes with 1009.
        close_timeout: Seconds to wait for the peer's Close reply.
        frame_timeout: Seconds of silence allowed in the middle of a frame
            (or fragmented message); then the connection is closed with 1008.
        max_messages_per_second: Messages (and Pings and Pongs) a connection
            may send per second, with bursts of one second's worth; more
            closes it with 1008. ``None``: no limit.
    """

    __slots__ = (
        "close_timeout",
        "connections",
        "frame_timeout",
        "max_message_size",
        "max_messages_per_second",
        "nursery",
        "park_after",
        "parking",
        "send_buffer_limit",
    )

    def __init__(
        self,
        nursery: trio.Nursery,
        parking: SocketParking,
        *,
        park_after: float = DEFAULT_PARK_AFTER,
        send_buffer_limit: int = DEFAULT_SEND_BUFFER_LIMIT,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        frame_timeout: float = DEFAULT_FRAME_TIMEOUT,
        max_messages_per_second: float | None = None,
    ) -> None:
        if not park_after >= 0:
            raise ValueError(f"park_after must be >= 0 seconds, got {park_after!r}")
        if send_buffer_limit < 1:
            raise ValueError(f"send_buffer_limit must be positive, got {send_buffer_limit!r}")
        if not close_timeout > 0:
            raise ValueError(f"close_timeout must be positive, got {close_timeout!r}")
        if not (frame_timeout > 0 and math.isfinite(frame_timeout)):
            raise ValueError(f"frame_timeout must be positive seconds, got {frame_timeout!r}")
        if max_messages_per_second is not None and not (
            max_messages_per_second > 0 and math.isfinite(max_messages_per_second)
        ):
            raise ValueError(
                "max_messages_per_second must be a positive number or None, "
                f"got {max_messages_per_second!r}"
            )
        self.nursery = nursery
        self.parking = parking
        self.park_after = float(park_after)
        self.send_buffer_limit = send_buffer_limit
        self.max_message_size = max_message_size
        self.close_timeout = float(close_timeout)
        self.frame_timeout = float(frame_timeout)
        self.max_messages_per_second = (
            float(max_messages_per_second) if max_messages_per_second is not None else None
        )
        #: Open connections (started, TCP not yet closed). A dict as an
        #: ordered set: it keeps parked connections reachable for shutdown.
        self.connections: dict[NetworkTransport, None] = {}

    def __len__(self) -> int:
        return len(self.connections)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Wait until cancelled, then close every connection still open.

        Run it in the connection nursery: parked connections have no task
        that cancellation could reach, so this one closes their sockets
        (sending Close 1001 where it fits) when the runtime shuts down.
        """
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            for connection in list(self.connections):
                connection._shutdown()


class NetworkTransport:
    """The :class:`Transport` of one WebSocket connection on a socket.

    Made by the gateway after it read the opening handshake. Until `start`,
    whatever is sent is held: the gateway binds the handle first (which may
    already send), and only then knows it can write the 101 response, which
    `start` sends ahead of the held frames.

    Args:
        sock: The connected, non-blocking socket; the transport owns it once
            started.
        home: Settings and nursery shared by the gateway's connections.
        tls: The TLS session when the connection is TLS.
    """

    __slots__ = (
        "__weakref__",
        "_bucket",
        "_codec",
        "_deadline",
        "_fd",
        "_flags",
        "_home",
        "_last_rx",
        "_out",
        "_out_head",
        "_out_size",
        "_pending",
        "_scope",
        "_sink",
        "_sock",
        "_terminal",
        "_tls",
        "_wscope",
    )

    def __init__(
        self,
        sock: socket.socket,
        home: ConnectionHome,
        *,
        tls: TlsState | None = None,
    ) -> None:
        self._sock: socket.socket | None = sock
        self._fd = sock.fileno()
        self._home = home
        self._tls = tls
        self._sink: MessageSink | None = None
        self._codec: FrameCodec | None = None
        self._flags = _HOLD
        # Unsent output, oldest first: whole frames (their TLS records on a
        # TLS connection), of which the first may be partly sent. Frame
        # boundaries are kept so that a Close can still follow a partial frame.
        self._out: deque[bytes] | None = None
        self._out_head = 0  # bytes of _out[0] already sent
        self._out_size = 0  # unsent bytes in _out
        self._pending = b""  # bytes read before start(), fed to the next codec
        self._terminal: tuple[int, str, bool] | BaseException | None = None
        # Close handshake deadline (Trio time); inf while no Close was sent.
        self._deadline = math.inf
        self._last_rx = 0.0
        self._scope: trio.CancelScope | None = None
        self._wscope: trio.CancelScope | None = None
        # The message-rate token bucket, (tokens, Trio time); None while full.
        self._bucket: tuple[float, float] | None = None

    def __repr__(self) -> str:
        state = "parked" if self._flags & _PARKED else "active"
        if self._sock is None:
            state = "closed"
        return f"<NetworkTransport fd={self._fd} {state}>"

    # ------------------------------------------------------------ Transport

    @property
    def is_open(self) -> bool:
        """True until a Close was sent or received, or the connection dropped."""
        return (
            self._sock is not None
            and self._terminal is None
            and not self._flags & (_CLOSE_SENT | _CLOSE_RECEIVED)
        )

    @property
    def is_parked(self) -> bool:
        """True while the socket waits in the parking, with no reader task."""
        return bool(self._flags & _PARKED)

    @property
    def has_reader(self) -> bool:
        """True while a reader task serves the connection."""
        return bool(self._flags & _READER)

    @property
    def buffered(self) -> int:
        """Bytes waiting in the send buffer."""
        return self._out_size

    def send_message(self, message: str | bytes) -> None:
        """Send a text (``str``) or binary (``bytes``) message; never blocks.

        Raises:
            trio.ClosedResourceError: A Close was sent or received, or the
                connection is gone.
        """
        if not self.is_open:
            raise trio.ClosedResourceError("the WebSocket connection is closing or closed")
        self._send_frame(serialize_message(message))

    def send_close(self, code: int, reason: str) -> None:
        """Send a Close frame (once) and wait in the background for the peer's reply.

        If the peer does not answer within the close timeout, TCP is dropped
        and the sink gets ``on_close(1006, ...)``.

        Raises:
            ValueError: ``code`` or ``reason`` cannot be sent (nothing is sent).
        """
        if self._flags & _CLOSE_SENT or self._terminal is not None or self._sock is None:
            return
        frame = serialize_close(code, reason)
        self._flags |= _CLOSE_SENT
        self._deadline = trio.current_time() + self._home.close_timeout
        self._send_frame(frame)
        if self._terminal is not None or self._flags & _HOLD:
            return
        if self._flags & _PARKED:
            # Someone must watch for the reply and the timeout.
            self._unpark()
            self._spawn_reader()
        elif self._flags & _WAITING and self._scope is not None:
            self._scope.deadline = self._deadline
        if self._wscope is not None:
            self._wscope.deadline = self._deadline

    def abort(self) -> None:
        """Drop the connection now, without a Close frame (idempotent).

        The sink gets ``on_close(1006, DISCONNECTED_REASON, False)`` unless it
        already got its terminal event.
        """
        self._lost()

    # --------------------------------------------------------------- start

    def start(self, sink: MessageSink, *, initial: bytes = b"", preamble: bytes = b"") -> None:
        """Start serving: send the preamble and what was held, then read (or park).

        Args:
            sink: Where received messages and the terminal event go.
            initial: Bytes already read past the handshake (h11's trailing
                data); they are parsed before anything read later.
            preamble: Bytes to send before the held frames (the 101 response).
        """
        if not self._flags & _HOLD:
            raise RuntimeError("this transport was already started")
        self._sink = sink
        self._pending = initial
        if self._sock is not None:
            self._home.connections[self] = None
        self._flags &= ~_HOLD
        held, self._out, self._out_size = self._out, None, 0
        if preamble:
            self._send_frame(preamble)
        for chunk in held or ():
            self._send_frame(chunk)
        if self._terminal is not None:
            self._schedule_terminal()
            return
        tls = self._tls
        if initial or self._flags & _CLOSE_SENT or (tls is not None and not tls.is_empty):
            self._spawn_reader()
        else:
            self._park()

    # ---------------------------------------------------------- the writer

    def _send_frame(self, frame: bytes) -> None:
        """Queue or send one frame, in order (TLS: encrypted now, never reordered)."""
        if self._flags & _HOLD:
            if self._out is None:
                self._out = deque()
            self._out.append(frame)
            self._out_size += len(frame)
            return
        if self._sock is None:
            return
        if self._tls is not None:
            try:
                frame = self._tls.encrypt(frame)
            except ssl.SSLError:
                self._lost()
                return
        self._send_raw(frame)

    def _send_raw(self, data: bytes) -> None:
        sock = self._sock
        if sock is None or not data:
            return
        out = self._out
        if out:
            size = self._out_size + len(data)
            if size > self._home.send_buffer_limit:
                self._overflow(size)
                return
            out.append(data)
            self._out_size = size
            return
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._lost()
            return
        if sent == len(data):
            return
        # Not all of it fit in the kernel: buffer the rest and let a writer
        # task wait for room. A lone message bigger than the limit is let in.
        self._out = deque([data])
        self._out_head = sent
        self._out_size = len(data) - sent
        self._spawn_writer()

    def _flush_some(self) -> None:
        """Send as much buffered output as the kernel takes now."""
        sock, out = self._sock, self._out
        if sock is None or not out:
            return
        buffers: list[bytes | memoryview] = list(islice(out, _MAX_IOV))
        if self._out_head:
            buffers[0] = memoryview(buffers[0])[self._out_head :]
        try:
            sent = sock.sendmsg(buffers)
        except BlockingIOError:
            return
        except OSError:
            self._lost()
            return
        self._out_size -= sent
        sent += self._out_head
        while out and sent >= len(out[0]):
            sent -= len(out.popleft())
        self._out_head = sent
        if not out:
            self._out = None

    def _spawn_writer(self) -> None:
        self._spawn_task(_WRITER, self._write_loop)

    def _spawn_task(self, flag: int, loop: Callable[[], Awaitable[None]]) -> None:
        # At most one reader and one writer per connection, started on demand.
        if self._flags & flag:
            return
        self._flags |= flag
        try:
            self._home.nursery.start_soon(loop)
        except RuntimeError:  # the connection nursery is closed: shutting down
            self._flags &= ~flag
            self._shutdown()

    async def _write_loop(self) -> None:
        try:
            with trio.CancelScope(deadline=self._deadline) as scope:
                self._wscope = scope
                while self._out and self._sock is not None:
                    try:
                        await trio.lowlevel.wait_writable(self._fd)
                    except trio.ClosedResourceError:  # aborted meanwhile
                        return
                    self._flush_some()
            self._wscope = None
            if scope.cancelled_caught:
                # Closing, and the peer did not take our last bytes in time.
                self._lost()
            elif self._out is None and self._flags & _CLOSE_WHEN_FLUSHED:
                self._close_tcp()
        finally:
            self._wscope = None
            self._flags &= ~_WRITER

    def _overflow(self, size: int) -> None:
        """Disconnect a client whose send buffer would exceed the limit."""
        sock, out = self._sock, self._out
        logger.info(
            "disconnecting a slow WebSocket client: %s bytes would be buffered; the limit is %s",
            f"{size:,}",
            f"{self._home.send_buffer_limit:,}",
        )
        if sock is not None and out and self._tls is None and not self._flags & _CLOSE_SENT:
            # Drop what the peer has not started to receive, but finish the
            # frame it has, so that the Close that follows is well framed. The
            # kernel buffer is likely full, so this is a best effort.
            keep = [memoryview(out[0])[self._out_head :]] if self._out_head else []
            close = serialize_close(SLOW_CLIENT_CODE, SLOW_CLIENT_REASON)
            with contextlib.suppress(OSError):
                sock.sendmsg([*keep, close])
            self._flags |= _CLOSE_SENT
        self._lost()

    # ---------------------------------------------------------- the reader

    def _park(self) -> None:
        if self._sock is None:
            return
        try:
            self._home.parking.park(self._fd, self._wake)
        except trio.ClosedResourceError:  # the runtime is shutting down
            self._shutdown()
            return
        self._flags |= _PARKED

    def _unpark(self) -> None:
        if self._flags & _PARKED:
            self._flags &= ~_PARKED
            self._home.parking.unpark(self._fd)

    def _wake(self) -> None:
        """The parking's callback: bytes (or EOF) arrived on a parked socket."""
        self._flags &= ~_PARKED
        if self._sock is not None:
            self._spawn_reader()

    def _spawn_reader(self) -> None:
        self._spawn_task(_READER, self._read_loop)

    def _can_park(self, codec: FrameCodec) -> bool:
        tls = self._tls
        return (
            codec.is_idle
            and not self._pending
            and not self._flags & _CLOSE_SENT
            and (tls is None or tls.is_empty)
        )

    async def _read_loop(self) -> None:
        codec = FrameCodec(max_message_size=self._home.max_message_size)
        self._codec = codec
        self._last_rx = trio.current_time()
        try:
            while True:
                with trio.CancelScope() as scope:
                    self._scope = scope
                    if await self._pump(codec, scope):
                        return
                self._scope = None
                # The wait's deadline passed: park, or give up on the peer.
                if self._flags & _CLOSE_SENT:
                    if trio.current_time() >= self._deadline and self._terminal is None:
                        self._lost()  # no Close reply in time
                elif self._terminal is None and self._can_park(codec):
                    self._flags &= ~_READER
                    self._drop_full_bucket()
                    self._park()
                    return
                elif self._terminal is None and self._silent_mid_frame():
                    # Slowloris: half a frame, then silence.
                    frame_timeout = self._home.frame_timeout
                    self._violate(
                        f"no data for {frame_timeout:g} s in the middle of a frame; "
                        f"the frame timeout is {frame_timeout:g} s"
                    )
        finally:
            self._scope = None
            self._codec = None
            self._flags &= ~(_READER | _WAITING)

    def _wait_deadline(self, codec: FrameCodec) -> float:
        if self._flags & _CLOSE_SENT:
            return self._deadline
        if self._can_park(codec):
            return self._last_rx + self._home.park_after
        return self._last_rx + self._home.frame_timeout

    async def _pump(self, codec: FrameCodec, scope: trio.CancelScope) -> bool:
        """Read and deliver until the connection ends (True) or the wait's deadline passed."""
        if self._pending:
            data, self._pending = self._pending, b""
            if await self._feed(codec, codec.receive(data)):
                await self._deliver_terminal()
                return True
        while True:
            if self._terminal is not None:
                await self._deliver_terminal()
                return True
            try:
                data = self._recv()
            except BlockingIOError:
                scope.deadline = self._wait_deadline(codec)
                self._flags |= _WAITING
                try:
                    await trio.lowlevel.wait_readable(self._fd)
                except trio.ClosedResourceError:
                    continue  # aborted while waiting: the terminal event is set
                finally:
                    self._flags &= ~_WAITING
                scope.deadline = math.inf
                if scope.cancel_called:
                    # Bytes and the deadline arrived together; the scope is
                    # spent, so leave it before calling the sink again.
                    return False
                continue
            except OSError:
                data = b""  # reset or TLS failure: the connection is lost
            if data:
                self._last_rx = trio.current_time()
            await self._feed(codec, codec.receive(data))
            # A flood of pings or tiny frames must not starve other tasks.
            await trio.lowlevel.checkpoint()

    def _recv(self) -> bytes:
        sock = self._sock
        if sock is None:
            raise ConnectionResetError("the connection is closed")
        tls = self._tls
        if tls is None:
            return sock.recv(_RECV_SIZE)
        try:
            data, to_send = tls.recv(sock)
        except ssl.SSLError as exc:
            raise ConnectionResetError(f"TLS failed: {exc}") from exc
        if to_send:
            self._send_raw(to_send)
        return data

    async def _feed(self, codec: FrameCodec, events: list[WsEvent]) -> bool:
        """Handle events in order; return True once the connection ended."""
        rate = self._home.max_messages_per_second
        for event in events:
            if (
                rate is not None
                and isinstance(event, TextMessage | BinaryMessage | Ping | Pong)
                and not self._take_token(rate)
            ):
                self._violate(f"over the limit of {rate:g} messages per second")
                return True
            if isinstance(event, TextMessage | BinaryMessage):
                sink = self._sink
                assert sink is not None
                try:
                    await sink.on_message(event.data)
                except Exception:
                    logger.exception("a WebSocket sink failed on a message; dropped it")
            elif isinstance(event, Ping):
                self._send_frame(codec.send_pong(event.payload))
            elif isinstance(event, Pong):
                pass
            elif isinstance(event, CloseReceived):
                self._flags |= _CLOSE_RECEIVED
                if not self._flags & _CLOSE_SENT:
                    self._flags |= _CLOSE_SENT
                    # Echo the code (RFC 6455 section 5.5.1); an empty Close gets an empty one.
                    reply = _EMPTY_CLOSE if event.code == 1005 else _close_reply(event.code)
                    self._send_frame(reply)
                self._set_terminal((event.code, event.reason, True))
                self._close_after_flush()
            elif isinstance(event, ProtocolFailure):
                if not self._flags & _CLOSE_SENT:
                    self._flags |= _CLOSE_SENT
                    self._send_frame(serialize_close(event.code, event.reason))
                self._set_terminal(WebSocketProtocolError(event.code, event.reason))
                self._close_after_flush()
            else:  # ConnectionLost
                self._lost()
            if self._terminal is not None:
                return True
        return False

    # -------------------------------------------------------------- limits

    def _take_token(self, rate: float) -> bool:
        """Count one message against the rate limit; False when over it."""
        now = trio.current_time()
        bucket = self._bucket
        # No bucket means a full one: one second's worth of messages.
        tokens = rate if bucket is None else min(rate, bucket[0] + (now - bucket[1]) * rate)
        if tokens < 1.0:
            self._bucket = (tokens, now)
            return False
        self._bucket = (tokens - 1.0, now)
        return True

    def _silent_mid_frame(self) -> bool:
        """True when the frame timeout passed and no byte is waiting to be read."""
        sock = self._sock
        if sock is None or trio.current_time() < self._last_rx + self._home.frame_timeout:
            return False
        try:
            sock.recv(1, socket.MSG_PEEK)  # bytes or EOF came with the deadline: read on
        except BlockingIOError:
            return True
        except OSError:
            pass  # the next read reports it
        return False

    def _drop_full_bucket(self) -> None:
        # A parked connection keeps no bucket once it has refilled.
        bucket, rate = self._bucket, self._home.max_messages_per_second
        if bucket is not None and (
            rate is None or bucket[0] + (trio.current_time() - bucket[1]) * rate >= rate
        ):
            self._bucket = None

    def _violate(self, reason: str) -> None:
        """Close with 1008 for a broken policy of ours; the sink gets an error."""
        logger.info("closing a WebSocket connection with 1008: %s", reason)
        if not self._flags & _CLOSE_SENT:
            self._flags |= _CLOSE_SENT
            self._send_frame(serialize_close(POLICY_VIOLATION_CODE, reason))
        self._set_terminal(WebSocketProtocolError(POLICY_VIOLATION_CODE, reason))
        self._close_after_flush()

    # ------------------------------------------------------------- endings

    def _set_terminal(self, terminal: tuple[int, str, bool] | BaseException) -> None:
        if self._terminal is None:
            self._terminal = terminal
            self._schedule_terminal()

    def _schedule_terminal(self) -> None:
        # A running reader delivers it after the event it is delivering, so
        # the sink never sees two events at once. Otherwise a short task does.
        if self._flags & (_READER | _HOLD | _DELIVERED) or self._sink is None:
            return
        try:
            self._home.nursery.start_soon(self._deliver_terminal)
        except RuntimeError:  # the connection nursery is closed: nobody to tell
            self._flags |= _DELIVERED

    async def _deliver_terminal(self) -> None:
        terminal, sink = self._terminal, self._sink
        if self._flags & _DELIVERED or terminal is None or sink is None:
            return
        self._flags |= _DELIVERED
        self._sink = None
        try:
            if isinstance(terminal, BaseException):
                await sink.on_error(terminal)
            else:
                await sink.on_close(*terminal)
        except Exception:
            logger.exception("a WebSocket sink failed on the connection's end")

    def _lost(self) -> None:
        """The connection is gone (or we dropped it): close TCP, report 1006."""
        self._close_tcp()
        self._set_terminal((1006, DISCONNECTED_REASON, False))

    def _close_after_flush(self) -> None:
        if self._sock is None:
            return
        if not self._out:
            self._close_tcp()
            return
        self._flags |= _CLOSE_WHEN_FLUSHED
        self._deadline = min(self._deadline, trio.current_time() + self._home.close_timeout)
        if self._wscope is not None:
            self._wscope.deadline = self._deadline

    def _close_tcp(self) -> None:
        sock = self._sock
        if sock is None:
            return
        self._sock = None
        self._out = None
        self._out_size = 0
        self._unpark()
        self._home.connections.pop(self, None)
        tls = self._tls
        if tls is not None and self._flags & _CLOSE_RECEIVED:
            # An orderly end: say so at the TLS level too, if it fits now.
            with contextlib.suppress(OSError, ssl.SSLError):
                tls.obj.unwrap()
            with contextlib.suppress(OSError, ssl.SSLError):
                sock.send(tls.outgoing.read())
        self._tls = None
        # Wakes our reader or writer if one waits on this fd.
        trio.lowlevel.notify_closing(sock)
        sock.close()

    def _shutdown(self) -> None:
        """The runtime is stopping: say 1001 where it fits, close, tell nobody."""
        self._flags |= _DELIVERED
        sock = self._sock
        if sock is None:
            return
        if not self._out and not self._flags & (_CLOSE_SENT | _HOLD):
            frame = serialize_close(1001, "going away")
            with contextlib.suppress(OSError, ssl.SSLError):
                if self._tls is not None:
                    frame = self._tls.encrypt(frame)
                sock.send(frame)
        self._close_tcp()


def _close_reply(code: int) -> bytes:
    try:
        return serialize_close(code, "")
    except ValueError:  # a code we may not send back: answer with a plain 1000
        return serialize_close(1000, "")
