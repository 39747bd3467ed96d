"""The reader side of a connection: one wake-up, from the first byte until it parks again.

A parked connection has no reader. When bytes arrive (the parking calls the
connection back), the connection makes a :class:`Reader` and submits its
`Reader.visit` to the parking's workers (the one that woke serves it in the
same scheduler pass). The *visit* is one non-blocking ``recv``, the
events handed to the right place (messages to the sink, one at a time and in
order; Pings answered with Pongs; the peer's Close, protocol failures and a
dropped stream to the connection, which owns the close handshake), and, when
the connection is idle again, the socket goes straight back to the parking.
Whole small frames are parsed without a codec (`parse_simple`); anything
else goes through a :class:`~trio_durable._websocket._frames.FrameCodec`
borrowed from the home's pool of idle codecs.

A connection that stays busy (woken again within ``park_after``, or a read
that filled the buffer), stops in the middle of a frame, or waits for the
reply to its Close gets a task of its own instead (`Reader.run`, in the
connection nursery, also used for a connection that starts closing while
parked): it reads with
`trio.lowlevel.wait_readable`, enforces the frame timeout and the close
deadline, and once the codec is idle and nothing arrived for ``park_after``
seconds, it ends and the connection parks the socket again.

**Fairness.** A flooding client fills each ``recv`` with thousands of small
frames; parsing and delivering them all at once would hold the event loop
for tens of milliseconds while every other connection, handshake and timer
waits. So the reader bounds its turns, whatever the rate limit says:

* it feeds the codec small bites (``_FEED_SIZE`` bytes) while the stream
  is made of small frames, and doubles the bite while it is inside a big
  frame (whose payload is cheap to parse), so one parse stays short without
  slowing big messages;
* after each event it spends one unit of its task's cooperative budget
  (`~trio_durable._core._budget.cooperative_yield`), as calls do; before the
  next event or bite of the same read it yields if its turn began ``_TURN``
  seconds ago or more, and it always yields between two reads. Ten flooders
  then delay a bystander by about ten turns, half a millisecond, instead of
  ten reads' worth of messages (see "Fairness" in docs/benchmarks.md for
  how the turn was chosen).

The reader uses one cancel scope per wake-up, not one per message: the
scope's deadline is finite only while the reader waits for bytes, so it can
never cancel a sink call half way.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Final, Protocol

import trio

from .._core._budget import cooperative_yield
from ._frames import (
    BinaryMessage,
    CloseReceived,
    FrameCodec,
    Ping,
    Pong,
    ProtocolFailure,
    TextMessage,
    WsEvent,
    parse_simple,
)
from ._home import ConnectionHome
from ._parking import TURN
from ._transport import MessageSink

__all__ = ["RECV_SIZE", "Reader", "ReaderOwner"]

logger: Final = logging.getLogger("trio_durable.websocket")

#: Bytes given to the codec at once while the stream is made of small frames
#: (a few dozen frames: parsing costs several microseconds per frame).
_FEED_SIZE: Final = 512
#: The largest bite, inside a big frame: what one ``recv`` returns.
_MAX_FEED: Final = 65536
#: Seconds (of real time) a reader may deliver before it lets others run.
_TURN: Final = TURN
#: What one ``recv`` asks for: a read this big says the peer keeps sending.
RECV_SIZE: Final = 65536


class ReaderOwner(Protocol):
    """What a reader needs from its connection."""

    def reader_done(self, park: bool) -> None:
        """The reader ends (its last act); ``park``: park the socket, it is idle."""

    @property
    def terminal(self) -> object:
        """The connection's terminal event once it has one (``None`` before); read only."""

    @property
    def close_sent(self) -> bool:
        """True once a Close was sent: the reader waits for the reply, never parks."""

    @property
    def close_deadline(self) -> float:
        """When (Trio time) to give up waiting for the peer's Close reply."""

    def recv(self) -> bytes:
        """Read what is there (``b""``: EOF), through TLS if any.

        Raises:
            BlockingIOError: Nothing to read now.
            OSError: The connection failed.
        """

    def has_input(self) -> bool:
        """True when bytes (or EOF) wait in the kernel, without reading them."""

    def may_park(self) -> bool:
        """True when the connection itself keeps nothing that parking would lose."""

    def admit_message(self, rate: float) -> bool:
        """Count one message against the rate limit; False when over it."""

    def send_frame(self, frame: bytes) -> None:
        """Send one frame (a Pong), in order with everything else."""

    def close_received(self, code: int, reason: str) -> None:
        """The peer sent a Close frame: answer it, end the connection cleanly."""

    def fail(self, code: int, reason: str) -> None:
        """The peer broke the protocol (or a policy of ours): close with ``code``."""

    def violate_policy(self, reason: str) -> None:
        """The peer broke a policy of ours (rate, frame timeout): close with 1008."""

    def connection_lost(self) -> None:
        """The stream ended without a Close frame: close TCP, report 1006."""

    def shutdown(self) -> None:
        """The runtime is stopping: close without telling anyone."""

    async def deliver_terminal(self) -> None:
        """Give the sink its terminal event (once)."""


class Reader:
    """Reads one connection from a wake-up until it parks or ends.

    Args:
        owner: The connection.
        fd: Its socket's file descriptor.
        home: Its settings.
        sink: Where messages go.
        pending: Bytes read before the reader started (past the handshake),
            parsed before anything read later.
    """

    __slots__ = (
        "_busy",
        "_codec",
        "_detached",
        "_fd",
        "_home",
        "_last_rx",
        "_owner",
        "_pending",
        "_scope",
        "_sink",
        "_stash",
        "_waiting",
        "turn_end",
    )

    def __init__(
        self,
        owner: ReaderOwner,
        fd: int,
        home: ConnectionHome,
        sink: MessageSink,
        pending: bytes = b"",
    ) -> None:
        self._owner = owner
        self._fd = fd
        self._home = home
        self._sink = sink
        self._pending = pending
        self._busy = False
        # Borrowed from the pool only when a frame needs it.
        self._codec: FrameCodec | None = None
        self._scope: trio.CancelScope | None = None
        self._last_rx = 0.0
        self._waiting = False
        #: perf_counter() time at which this turn is over.
        self.turn_end = 0.0
        # While the connection is being handed to another process: the
        # messages read meanwhile (not delivered here), and the reader's end.
        self._stash: list[str | bytes] | None = None
        self._detached: trio.Event | None = None

    async def stop_for_hand_over(self) -> list[str | bytes]:
        """Stop reading at the next message boundary; return what was read but not delivered.

        The messages after the one being delivered now are kept, not given to
        the sink: the process that adopts the connection delivers them. A
        frame half read is read to its end first (the peer is sending it).
        """
        if self._stash is None:
            self._stash = []
            self._detached = trio.Event()
        scope, codec = self._scope, self._codec
        if self._waiting and scope is not None and codec is not None and codec.is_idle:
            scope.deadline = -math.inf  # waiting for bytes with nothing half read: stop now
        assert self._detached is not None
        await self._detached.wait()
        return self._stash

    def _stopping_here(self) -> bool:
        codec = self._codec
        return self._stash is not None and (codec is None or codec.is_idle) and not self._pending

    def close_deadline_changed(self, deadline: float) -> None:
        """The connection sent a Close: stop waiting for bytes at ``deadline``."""
        if self._waiting and self._scope is not None:
            self._scope.deadline = deadline

    def _end(self, park: bool) -> None:
        """The reader's last act: give back the codec, hand the connection back."""
        self._scope = None
        self._waiting = False
        codec = self._codec
        if codec is not None:
            self._codec = None
            self._home.delivery.give_codec(codec)
        self._owner.reader_done(park)
        if self._detached is not None:
            self._detached.set()

    # ---------------------------------------------------- a worker's visit

    async def visit(self) -> None:
        """(A parking worker) read what arrived, deliver it, then park, end, or go on alone.

        One ``recv``: a read that did not fill the buffer took what the peer
        had sent, and a socket re-armed in the parking with bytes waiting is
        reported again at once. A connection that keeps sending, or is left
        in the middle of a frame or of its close handshake, goes on in a
        reader task of its own (`run`). Like `run`, the visit ends with
        ``owner.reader_done(park)`` and no checkpoint in between.
        """
        owner = self._owner
        park = promoted = False
        self.turn_end = time.perf_counter() + _TURN
        try:
            if await self._visit_once():
                return
            if owner.terminal is not None or self._stopping_here():
                return
            if not self._busy and self._can_park():
                park = True
                return
            # Busy, half a frame, or closing: a task of its own from here on.
            try:
                self._home.nursery.start_soon(self.run)
            except RuntimeError:  # the connection nursery is closed: shutting down
                owner.shutdown()
                return
            promoted = True
        finally:
            if not promoted:
                self._end(park)

    async def _visit_once(self) -> bool:
        """Handle the pending bytes and one read; True once the connection ended."""
        owner = self._owner
        if self._pending:
            data, self._pending = self._pending, b""
            if await self._feed(data):
                await owner.deliver_terminal()
                return True
        if owner.terminal is not None:
            await owner.deliver_terminal()
            return True
        if self._stopping_here():
            return False
        try:
            data = owner.recv()
        except BlockingIOError:
            return False  # woken for bytes someone else read: park again
        except OSError:
            data = b""  # reset or TLS failure: the connection is lost
        if await self._feed(data) or owner.terminal is not None:
            await owner.deliver_terminal()
            return True
        # A full read: more is probably waiting. A reader task of its own
        # serves such a connection, with the fairness rules.
        self._busy = len(data) >= RECV_SIZE
        return False

    # ---------------------------------------------------- a task of its own

    async def run(self) -> None:
        """The reader task: read and deliver until the connection ends or should be parked.

        Either way it ends with ``owner.reader_done(park)``, with no
        checkpoint in between, so nothing runs while the socket is neither
        read nor parked.
        """
        owner = self._owner
        park = False
        codec = self._codec
        if codec is None:
            codec = self._codec = self._home.delivery.take_codec()
        self._last_rx = trio.current_time()
        self.turn_end = time.perf_counter() + _TURN
        try:
            while True:
                with trio.CancelScope() as scope:
                    self._scope = scope
                    if await self._pump(codec, scope):
                        return
                self._scope = None
                if self._stopping_here():
                    return  # handed over: the adopting process reads from here on
                # The wait's deadline passed: park, or give up on the peer.
                if owner.close_sent:
                    if trio.current_time() >= owner.close_deadline and owner.terminal is None:
                        owner.connection_lost()  # no Close reply in time
                elif owner.terminal is None and self._can_park():
                    park = True
                    return
                elif owner.terminal is None and self._silent_mid_frame():
                    # Slowloris: half a frame, then silence.
                    frame_timeout = self._home.frame_timeout
                    owner.violate_policy(
                        f"no data for {frame_timeout:g} s in the middle of a frame; "
                        f"the frame timeout is {frame_timeout:g} s",
                    )
        finally:
            self._end(park)

    def _can_park(self) -> bool:
        codec = self._codec
        return (codec is None or codec.is_idle) and not self._pending and self._owner.may_park()

    def _wait_deadline(self, codec: FrameCodec) -> float:
        owner = self._owner
        if owner.close_sent:
            return owner.close_deadline
        if self._can_park():
            return self._last_rx + self._home.park_after
        return self._last_rx + self._home.frame_timeout

    def _silent_mid_frame(self) -> bool:
        """True when the frame timeout passed and no byte is waiting to be read."""
        if trio.current_time() < self._last_rx + self._home.frame_timeout:
            return False
        return not self._owner.has_input()

    async def _pump(self, codec: FrameCodec, scope: trio.CancelScope) -> bool:
        """Read and deliver until the connection ends (True) or the wait's deadline passed."""
        owner = self._owner
        if self._pending:
            data, self._pending = self._pending, b""
            if await self._feed(data):
                await owner.deliver_terminal()
                return True
        while True:
            if owner.terminal is not None:
                await owner.deliver_terminal()
                return True
            if self._stopping_here():
                return False
            try:
                data = owner.recv()
            except BlockingIOError:
                scope.deadline = self._wait_deadline(codec)
                self._waiting = True
                try:
                    await trio.lowlevel.wait_readable(self._fd)
                except trio.ClosedResourceError:
                    continue  # aborted while waiting: the terminal event is set
                finally:
                    self._waiting = False
                scope.deadline = math.inf
                self.turn_end = time.perf_counter() + _TURN
                if scope.cancel_called:
                    # Bytes and the deadline arrived together; the scope is
                    # spent, so leave it before calling the sink again.
                    return False
                continue
            except OSError:
                data = b""  # reset or TLS failure: the connection is lost
            self._last_rx = trio.current_time()
            await self._feed(data)
            # Others run between two reads, however little this one held: it
            # is also cheaper. A busy peer's next message is usually there
            # when we come back, where an immediate recv() would find nothing
            # and pay for a failed read and two epoll_ctl() calls.
            await trio.lowlevel.checkpoint()
            self.turn_end = time.perf_counter() + _TURN

    # ------------------------------------------------------------- parsing

    async def _feed(self, data: bytes) -> bool:
        """Parse and handle ``data`` (``b""``: EOF); True once the connection ended."""
        codec = self._codec
        if data and len(data) <= _FEED_SIZE and (codec is None or codec.is_idle):
            messages = parse_simple(data, self._home.max_message_size)
            if messages is not None:
                return await self._deliver(messages)
        if codec is None:
            codec = self._codec = self._home.delivery.take_codec()
        if len(data) <= _FEED_SIZE:  # one small bite
            return await self._handle(codec, codec.receive(data))
        return await self._take(codec, data)

    async def _take(self, codec: FrameCodec, data: bytes) -> bool:
        """Parse and handle ``data`` a bite at a time; True once the connection ended."""
        end = len(data)
        feed, pos = _FEED_SIZE, 0
        while pos < end:
            if pos and time.perf_counter() >= self.turn_end:
                await self._next_turn()
            events = codec.receive(data[pos : pos + feed])
            pos += feed
            if await self._handle(codec, events):
                return True
            # No whole event came out: we are inside a big frame, whose
            # payload is cheap to parse, so take bigger bites.
            feed = _FEED_SIZE if events else min(2 * feed, _MAX_FEED)
        return False

    async def _deliver(self, messages: list[str | bytes]) -> bool:
        """Hand whole messages to the sink in order; return True once the connection ended."""
        owner = self._owner
        rate = self._home.max_messages_per_second
        sink = self._sink
        first = True
        for message in messages:
            if first:
                first = False
            elif time.perf_counter() >= self.turn_end:
                await self._next_turn()
            if rate is not None and not owner.admit_message(rate):
                owner.violate_policy(f"over the limit of {rate:g} messages per second")
                return True
            if self._stash is not None:
                self._stash.append(message)  # for the process adopting the connection
                continue
            try:
                await sink.on_message(message)
            except Exception:
                logger.exception("a WebSocket sink failed on a message; dropped it")
            if owner.terminal is not None:
                return True
            await cooperative_yield()
        return False

    async def _handle(self, codec: FrameCodec, events: list[WsEvent]) -> bool:
        """Handle events in order; return True once the connection ended."""
        owner = self._owner
        rate = self._home.max_messages_per_second
        first = True
        for event in events:
            if first:
                first = False
            elif time.perf_counter() >= self.turn_end:
                await self._next_turn()
            if isinstance(event, TextMessage | BinaryMessage):
                if rate is not None and not owner.admit_message(rate):
                    owner.violate_policy(f"over the limit of {rate:g} messages per second")
                    return True
                if self._stash is not None:
                    self._stash.append(event.data)  # for the process adopting the connection
                    continue
                try:
                    await self._sink.on_message(event.data)
                except Exception:
                    logger.exception("a WebSocket sink failed on a message; dropped it")
            elif isinstance(event, Ping | Pong):
                if rate is not None and not owner.admit_message(rate):
                    owner.violate_policy(f"over the limit of {rate:g} messages per second")
                    return True
                if isinstance(event, Ping):
                    owner.send_frame(codec.send_pong(event.payload))
            elif isinstance(event, CloseReceived):
                owner.close_received(event.code, event.reason)
            elif isinstance(event, ProtocolFailure):
                owner.fail(event.code, event.reason)
            else:  # ConnectionLost
                owner.connection_lost()
            if owner.terminal is not None:
                return True
            await cooperative_yield()
        return False

    async def _next_turn(self) -> None:
        """This turn is over: let every other task run, then start a new one."""
        await trio.lowlevel.checkpoint()
        self.turn_end = time.perf_counter() + _TURN
