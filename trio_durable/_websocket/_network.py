"""The network connection: one WebSocket on a TCP (or TLS) socket, parked while idle.

A :class:`NetworkTransport` carries one connection accepted by the gateway
after the opening handshake. It implements
:class:`~trio_durable._websocket._transport.Transport` for the handle that an
object holds, and delivers what it reads to that handle's
:class:`~trio_durable._websocket._transport.MessageSink`. It owns the
connection's life: starting, parking and waking, the close handshake, and
the one terminal event. The jobs around it live next door:

============================  ==================================================
``_reader.py``                the reader task of one wake-up: codec, delivery
``_send_buffer.py``           unsent output and the writer task that drains it
``_rate.py``                  the message rate limit (a token bucket)
``_tls.py``                   TLS over memory BIOs, so TLS sockets park too
``_home.py``                  settings, nursery and parking shared by connections
``_parking.py``               the one task that watches every parked socket
============================  ==================================================

**Parked while idle.** A connection without traffic holds no Trio task, no
codec and no buffer: only the stdlib socket, registered in the runtime's
shared :class:`~trio_durable._websocket._parking.SocketParking`, and this
small ``__slots__`` object (a parked connection pays for every slot, so the
state of a wake-up lives in its :class:`~trio_durable._websocket._reader.Reader`
and unsent output in a :class:`~trio_durable._websocket._send_buffer.SendBuffer`,
each made only when needed). When bytes arrive, the parking calls `_wake`,
which submits a reader's visit to the parking's workers; a worker reads
and delivers what arrived and parks the socket again at once (one ``epoll_ctl``
re-arms it). A connection that stays busy gets a reader task of its own,
which hands it back for parking once the codec is idle and nothing arrived
for ``park_after`` seconds.

**Sends never block.** `NetworkTransport.send_message` serializes the frame
and tries a direct non-blocking ``send``. What the kernel does not take goes
into a bounded send buffer, drained by a writer task started on demand. A
peer that lets the buffer exceed ``send_buffer_limit`` is dropped (see
`NetworkTransport._overflow`): a broadcast never waits for a slow client.
One message bigger than the limit is accepted into an empty buffer, so a
healthy client can still receive a big message; the bound is therefore
``send_buffer_limit`` plus one message.

**TLS.** A TLS connection is parked only when the TLS layer holds no pending
bytes (:attr:`TlsState.is_empty`). A parked TLS connection keeps its
``SSLObject`` (OpenSSL's session state, a few KiB), so it costs more than a
plain one but still has no task. Buffered output is ciphertext, so when a
slow TLS client overflows its buffer no Close frame can be added after the
dropped records: it is just disconnected.

**The close handshake.** The connection answers the peer's Close itself
(echoing the code), and after sending its own Close waits ``close_timeout``
seconds for the reply (and for the peer to take the rest of the output)
before dropping TCP. Limits on the peer (the frame timeout and the message
rate) close with 1008.

Terminal events reach the sink exactly once: ``on_close`` for a Close frame
(``was_clean=True``) or a dropped connection (1006), ``on_error`` with a
:class:`WebSocketProtocolError` when the peer broke the protocol (the Close
frame with the right code was already sent; 1008 for our limits).
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import ssl
from typing import Final

import attrs
import trio
from websockets.frames import Frame, Opcode

from .._exceptions import WebSocketProtocolError
from .._limits import CloseCode
from ._frames import serialize_close, serialize_message
from ._home import ConnectionHome
from ._rate import TokenBucket
from ._reader import RECV_SIZE, Reader
from ._send_buffer import SendBuffer
from ._tls import TlsState
from ._transport import DISCONNECTED_REASON, SLOW_CLIENT_REASON, MessageSink

__all__ = ["Detached", "NetworkTransport", "client_frames"]

logger: Final = logging.getLogger("trio_durable.websocket")

_RECV_SIZE: Final = RECV_SIZE
# A Close frame without a status code: the reply to one.
_EMPTY_CLOSE: Final = b"\x88\x00"

# Bits of NetworkTransport._flags. One int rather than a slot per flag: every
# parked connection pays for each slot.
_HOLD: Final = 1 << 0  # not started: output is held (plaintext) until start()
_PARKED: Final = 1 << 1  # registered in the parking
_CLOSE_SENT: Final = 1 << 2
_CLOSE_RECEIVED: Final = 1 << 3
_CLOSE_WHEN_FLUSHED: Final = 1 << 4  # close TCP once the send buffer is empty
_DELIVERED: Final = 1 << 5  # the terminal event went to the sink (or never will)
_MOVED: Final = 1 << 6  # handed to another process: this object serves it no more
_IN_EPOLL: Final = 1 << 7  # the parking's epoll knows the fd (re-arming is one modify)


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

    Attributes:
        terminal: The connection's end once it has one (``None`` before):
            ``(code, reason, was_clean)`` or the protocol error. Set only here;
            the reader reads it to know when to stop.
    """

    __slots__ = (
        "_bucket",
        "_deadline",
        "_fd",
        "_flags",
        "_home",
        "_out",
        "_reader",
        "_sink",
        "_sock",
        "_tls",
        "_woke_at",
        "terminal",
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
        self._flags = _HOLD
        # Unsent output; None while there is none. Before start() it holds
        # the plaintext frames sent so far.
        self._out: SendBuffer | None = None
        # The reader of the current wake-up; None while parked or ended.
        self._reader: Reader | None = None
        self.terminal: tuple[int, str, bool] | BaseException | None = None
        # Close handshake deadline (Trio time); inf while no Close was sent.
        self._deadline = math.inf
        # The message-rate token bucket; None while full (or no limit).
        self._bucket: TokenBucket | None = None
        # When (Trio time) the parking last woke it: a connection woken again
        # within park_after is busy and gets a reader task of its own.
        self._woke_at = -math.inf

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
            and self.terminal is None
            and not self._flags & (_CLOSE_SENT | _CLOSE_RECEIVED)
        )

    @property
    def is_parked(self) -> bool:
        """True while the socket waits in the parking, with no reader task."""
        return bool(self._flags & _PARKED)

    @property
    def has_reader(self) -> bool:
        """True while a reader task serves the connection."""
        return self._reader is not None

    @property
    def buffered(self) -> int:
        """Bytes waiting in the send buffer."""
        out = self._out
        return 0 if out is None or self._flags & _HOLD else out.size

    def send_message(self, message: str | bytes) -> None:
        """Send a text (``str``) or binary (``bytes``) message; never blocks.

        Raises:
            trio.ClosedResourceError: A Close was sent or received, or the
                connection is gone.
        """
        if not self.is_open:
            raise trio.ClosedResourceError("the WebSocket connection is closing or closed")
        self.send_frame(serialize_message(message))

    def send_close(self, code: int, reason: str) -> None:
        """Send a Close frame (once) and wait in the background for the peer's reply.

        If the peer does not answer within the close timeout, TCP is dropped
        and the sink gets ``on_close(1006, ...)``.

        Raises:
            ValueError: ``code`` or ``reason`` cannot be sent (nothing is sent).
        """
        if self._flags & _CLOSE_SENT or self.terminal is not None or self._sock is None:
            return
        frame = serialize_close(code, reason)
        self._flags |= _CLOSE_SENT
        self._deadline = trio.current_time() + self._home.close_timeout
        self.send_frame(frame)
        if self.terminal is not None or self._flags & _HOLD:
            return
        if self._flags & _PARKED:
            # Someone must watch for the reply and the timeout.
            self._unpark()
            self._spawn_reader(own_task=True)
        elif self._reader is not None:
            self._reader.close_deadline_changed(self._deadline)
        if self._out is not None:
            self._out.set_deadline(self._deadline)

    def abort(self) -> None:
        """Drop the connection now, without a Close frame (idempotent).

        The sink gets ``on_close(1006, DISCONNECTED_REASON, False)`` unless it
        already got its terminal event.
        """
        self.connection_lost()

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
        if self._sock is not None:
            self._home.connections[self] = None
        self._flags &= ~_HOLD
        held, self._out = self._out, None
        if preamble:
            self.send_frame(preamble)
        for frame in held.pop_all() if held is not None else ():
            self.send_frame(frame)
        if self.terminal is not None:
            self._schedule_terminal()
            return
        tls = self._tls
        if self._flags & _CLOSE_SENT:
            self._spawn_reader(initial, own_task=True)
        elif initial or (tls is not None and not tls.is_empty):
            self._spawn_reader(initial)
        else:
            self._park()

    # ---------------------------------------------------------- the writer

    def send_frame(self, frame: bytes) -> None:
        """Queue or send one frame, in order (TLS: encrypted now, never reordered)."""
        if self._flags & _HOLD:
            if self._out is None:
                self._out = SendBuffer()
            self._out.append(frame)
            return
        if self._sock is None:
            return
        if self._tls is not None:
            try:
                frame = self._tls.encrypt(frame)
            except ssl.SSLError:
                self.connection_lost()
                return
        self._send_raw(frame)

    def _send_raw(self, data: bytes) -> None:
        sock = self._sock
        if sock is None or not data:
            return
        out = self._out
        if out is not None:
            size = out.size + len(data)
            if size > self._home.send_buffer_limit:
                self._overflow(size)
                return
            out.append(data)
            return
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.connection_lost()
            return
        if sent == len(data):
            return
        # Not all of it fit in the kernel: buffer the rest and let a writer
        # task wait for room. A lone message bigger than the limit is let in.
        out = self._out = SendBuffer()
        out.append(data, sent=sent)
        try:
            self._home.nursery.start_soon(out.drain, sock, self)
        except RuntimeError:  # the connection nursery is closed: shutting down
            self.shutdown()

    @property
    def close_deadline(self) -> float:
        """When (Trio time) a closing connection gives up on its peer; ``inf`` if not closing."""
        return self._deadline

    def flushed(self, buffer: SendBuffer) -> None:
        """(Writer) ``buffer`` is empty: send directly again, or finish closing."""
        if self._out is not buffer:
            return  # closed meanwhile
        self._out = None
        if self._flags & _CLOSE_WHEN_FLUSHED:
            self._close_tcp()

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
            rest = out.unfinished()
            close = serialize_close(CloseCode.TRY_AGAIN_LATER, SLOW_CLIENT_REASON)
            with contextlib.suppress(OSError):
                sock.sendmsg([rest, close] if rest is not None else [close])
            self._flags |= _CLOSE_SENT
        self.connection_lost()

    # ------------------------------------------------- parking and reading

    def _park(self) -> None:
        if self._sock is None:
            return
        bucket, rate = self._bucket, self._home.max_messages_per_second
        if bucket is not None and (rate is None or bucket.is_full(rate, trio.current_time())):
            self._bucket = None  # a parked connection keeps no full bucket
        try:
            self._home.parking.park(self._fd, self._wake, rearm=bool(self._flags & _IN_EPOLL))
        except trio.ClosedResourceError:  # the runtime is shutting down
            self.shutdown()
            return
        self._flags |= _PARKED | _IN_EPOLL

    def _unpark(self) -> None:
        if self._flags & _PARKED:
            self._flags &= ~(_PARKED | _IN_EPOLL)
            self._home.parking.unpark(self._fd)

    def _wake(self) -> None:
        """The parking's callback: bytes (or EOF) arrived on a parked socket."""
        self._flags &= ~_PARKED
        if self._sock is not None:
            now = trio.current_time()
            # Woken again soon after the last wake: a busy connection, whose
            # own reader task waits for its next message at less cost than a
            # wake-up through the parking (and answers it one scheduler pass
            # sooner). A quiet one is served by a parking worker.
            busy = now - self._woke_at < self._home.park_after
            self._woke_at = now
            self._spawn_reader(own_task=busy)

    def _spawn_reader(self, initial: bytes = b"", *, own_task: bool = False) -> None:
        # At most one reader per connection, started on demand: served by a
        # parking worker, or (own_task) in a task of its own from the start.
        if self._reader is not None:
            return
        sink = self._sink
        assert sink is not None
        reader = self._reader = Reader(self, self._fd, self._home, sink, initial)
        try:
            if own_task:
                self._home.nursery.start_soon(reader.run)
            else:
                self._home.parking.submit(reader.visit)
        except RuntimeError:  # the connection nursery is closed: shutting down
            self._reader = None
            self.shutdown()

    # The rest of this section is what the reader asks of its connection
    # (the `ReaderOwner` protocol of _reader.py).

    def reader_done(self, park: bool) -> None:
        """(Reader) The reader ends, its last act; ``park``: the socket is idle, park it."""
        self._reader = None
        if park:
            self._park()

    @property
    def close_sent(self) -> bool:
        """True once a Close was sent (or is owed): the reader waits for the reply."""
        return bool(self._flags & _CLOSE_SENT)

    def recv(self) -> bytes:
        """(Reader) What the socket has (``b""``: EOF), decrypted when TLS.

        Raises:
            BlockingIOError: Nothing to read now.
            OSError: The connection failed (or is closed here).
        """
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

    def has_input(self) -> bool:
        """(Reader) True when bytes (or EOF) wait in the kernel; nothing is read."""
        sock = self._sock
        if sock is None:
            return True  # the next read reports it
        try:
            sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return False
        except OSError:
            return True  # the next read reports it
        return True  # bytes or EOF

    def may_park(self) -> bool:
        """(Reader) True unless closing, or the TLS layer holds bytes parking would lose."""
        tls = self._tls
        return not self._flags & _CLOSE_SENT and (tls is None or tls.is_empty)

    def admit_message(self, rate: float) -> bool:
        """(Reader) Count one message against ``rate`` per second; False when over it."""
        now = trio.current_time()
        bucket = self._bucket
        if bucket is None:
            bucket = self._bucket = TokenBucket(rate, now)
        return bucket.take(rate, now)

    def close_received(self, code: int, reason: str) -> None:
        """(Reader) The peer sent a Close: answer it, end cleanly once the output is out."""
        self._flags |= _CLOSE_RECEIVED
        if not self._flags & _CLOSE_SENT:
            self._flags |= _CLOSE_SENT
            # Echo the code (RFC 6455 section 5.5.1); an empty Close gets an empty one.
            self.send_frame(_EMPTY_CLOSE if code == CloseCode.NO_STATUS else _close_reply(code))
        self._set_terminal((code, reason, True))
        self._close_after_flush()

    def fail(self, code: int, reason: str) -> None:
        """(Reader) The peer broke the protocol or a limit: close with ``code``, report it."""
        if not self._flags & _CLOSE_SENT:
            self._flags |= _CLOSE_SENT
            self.send_frame(serialize_close(code, reason))
        self._set_terminal(WebSocketProtocolError(code, reason))
        self._close_after_flush()

    def violate_policy(self, reason: str) -> None:
        """(Reader) The peer broke a policy of ours (rate, frame timeout): close with 1008."""
        logger.info("closing a WebSocket connection with 1008: %s", reason)
        self.fail(CloseCode.POLICY_VIOLATION, reason)

    # ------------------------------------------------------------- endings

    def _set_terminal(self, terminal: tuple[int, str, bool] | BaseException) -> None:
        if self.terminal is None:
            self.terminal = terminal
            self._schedule_terminal()

    def _schedule_terminal(self) -> None:
        # A running reader delivers it after the event it is delivering, so
        # the sink never sees two events at once. Otherwise a short task does.
        if self._reader is not None or self._flags & (_HOLD | _DELIVERED) or self._sink is None:
            return
        try:
            self._home.nursery.start_soon(self.deliver_terminal)
        except RuntimeError:  # the connection nursery is closed: nobody to tell
            self._flags |= _DELIVERED

    async def deliver_terminal(self) -> None:
        """Give the sink its terminal event, once (the reader calls it after its last event)."""
        terminal, sink = self.terminal, self._sink
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

    def connection_lost(self) -> None:
        """The connection is gone (or we dropped it): close TCP, report 1006."""
        self._close_tcp()
        self._set_terminal((int(CloseCode.ABNORMAL), DISCONNECTED_REASON, False))

    def _close_after_flush(self) -> None:
        if self._sock is None:
            return
        if not self._out:
            self._close_tcp()
            return
        self._flags |= _CLOSE_WHEN_FLUSHED
        self._deadline = min(self._deadline, trio.current_time() + self._home.close_timeout)
        self._out.set_deadline(self._deadline)

    def _close_tcp(self) -> None:
        sock = self._sock
        if sock is None:
            return
        self._sock = None
        if self._out is not None:
            self._out.discard()
            self._out = None
        self._unpark()
        self._home.connections.pop(self, None)
        tls = self._tls
        if tls is not None and self._flags & _CLOSE_RECEIVED:
            # An orderly end: say so at the TLS level too, if it fits now.
            with contextlib.suppress(OSError):
                sock.send(tls.close_notify())
        self._tls = None
        # Wakes our reader or writer if one waits on this fd.
        trio.lowlevel.notify_closing(sock)
        sock.close()

    # ------------------------------------------------------------ hand-over

    async def detach(self) -> Detached | None:
        """Stop serving the connection here, to hand its socket to another process.

        Reading stops at a message boundary (a frame half read is read to its
        end); what was read and not delivered, and what was not sent yet,
        come with the socket. Returns ``None`` when the connection cannot
        move (TLS, closing, ended, not started): its owner closes it instead.
        """
        if (
            self._tls is not None
            or self._sock is None
            or self.terminal is not None
            or self._flags & (_CLOSE_SENT | _CLOSE_RECEIVED | _HOLD | _MOVED)
        ):
            return None
        self._flags |= _MOVED
        self._unpark()
        undelivered: list[str | bytes] = []
        reader = self._reader
        if reader is not None:
            undelivered = await reader.stop_for_hand_over()
            self._unpark()  # in case it parked the socket on its way out
        sock = self._sock
        if sock is None or self.terminal is not None:
            return None  # it ended while the reader finished
        unsent = b""
        if self._out is not None:
            unsent = self._out.take_unsent()
            self._out = None
        self._sock = None
        self._flags |= _DELIVERED  # the handle moves too: nobody here is told of an end
        self._home.connections.pop(self, None)
        # Our process lets go of the descriptor (after sending it); Trio stops
        # watching it without touching the connection.
        trio.lowlevel.notify_closing(sock)
        return Detached(sock, unsent, undelivered)

    def shutdown(self) -> None:
        """The runtime is stopping: say 1001 where it fits, close, tell nobody."""
        self._flags |= _DELIVERED
        sock = self._sock
        if sock is None:
            return
        if not self._out and not self._flags & (_CLOSE_SENT | _HOLD):
            frame = serialize_close(CloseCode.GOING_AWAY, "going away")
            with contextlib.suppress(OSError, ssl.SSLError):
                if self._tls is not None:
                    frame = self._tls.encrypt(frame)
                sock.send(frame)
        self._close_tcp()


@attrs.frozen
class Detached:
    """A connection taken out of its process, on its way to another.

    Attributes:
        sock: The connected socket (the receiver starts a new transport on it).
        unsent: Output the peer has not received yet, to send first.
        undelivered: Messages read but not delivered, to deliver first.
    """

    sock: socket.socket
    unsent: bytes
    undelivered: list[str | bytes]


def client_frames(messages: list[str | bytes]) -> bytes:
    """``messages`` as a client would have sent them (masked frames), for a new reader."""
    frames = []
    for message in messages:
        if isinstance(message, str):
            frame = Frame(Opcode.TEXT, message.encode("utf-8"))
        else:
            frame = Frame(Opcode.BINARY, message)
        frames.append(frame.serialize(mask=True))
    return b"".join(frames)


def _close_reply(code: int) -> bytes:
    try:
        return serialize_close(code, "")
    except ValueError:  # a code we may not send back: answer with a plain 1000
        return serialize_close(CloseCode.NORMAL, "")
