"""The reader side of a connection: one wake-up, from the first byte until it parks again.

A parked connection has no reader. When bytes arrive (the parking calls the
connection back), the connection makes a :class:`Reader` and runs it as a
task in the connection nursery. The reader builds a fresh
:class:`~trio_durable._websocket._frames.FrameCodec`, reads with non-blocking
``recv`` and `trio.lowlevel.wait_readable`, and hands each event to the
right place: messages to the sink, one at a time and in order; Pings
answered with Pongs; the peer's Close, protocol failures and a dropped
stream to the connection, which owns the close handshake. Once the codec is
idle and nothing arrived for ``park_after`` seconds, `Reader.run` returns and
the connection parks the socket again.

The reader uses one cancel scope per wake-up, not one per message: the
scope's deadline is finite only while the reader waits for bytes, so it can
never cancel a sink call half way.
"""

from __future__ import annotations

import logging
import math
from typing import Final, Protocol

import trio

from ._frames import (
    BinaryMessage,
    CloseReceived,
    FrameCodec,
    Ping,
    Pong,
    ProtocolFailure,
    TextMessage,
    WsEvent,
)
from ._home import ConnectionHome
from ._transport import MessageSink

__all__ = ["Reader", "ReaderOwner"]

logger: Final = logging.getLogger("trio_durable.websocket")


class ReaderOwner(Protocol):
    """What a reader needs from its connection."""

    @property
    def _ended(self) -> bool:
        """True once the connection has its terminal event."""

    @property
    def _closing(self) -> bool:
        """True once a Close was sent: the reader waits for the reply, never parks."""

    @property
    def _close_deadline(self) -> float:
        """When (Trio time) to give up waiting for the peer's Close reply."""

    def _recv(self) -> bytes:
        """Read what is there (``b""``: EOF), through TLS if any.

        Raises:
            BlockingIOError: Nothing to read now.
            OSError: The connection failed.
        """

    def _has_input(self) -> bool:
        """True when bytes (or EOF) wait in the kernel, without reading them."""

    def _may_park(self) -> bool:
        """True when the connection itself keeps nothing that parking would lose."""

    def _admit(self, rate: float) -> bool:
        """Count one message against the rate limit; False when over it."""

    def _send_frame(self, frame: bytes) -> None:
        """Send one frame (a Pong), in order with everything else."""

    def _close_received(self, code: int, reason: str) -> None:
        """The peer sent a Close frame: answer it, end the connection cleanly."""

    def _fail(self, code: int, reason: str) -> None:
        """The peer broke the protocol (or a policy of ours): close with ``code``."""

    def _violate(self, reason: str) -> None:
        """The peer broke a policy of ours (rate, frame timeout): close with 1008."""

    def _lost(self) -> None:
        """The stream ended without a Close frame: close TCP, report 1006."""

    async def _deliver_terminal(self) -> None:
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
        "_codec",
        "_fd",
        "_home",
        "_last_rx",
        "_owner",
        "_pending",
        "_scope",
        "_sink",
        "_waiting",
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
        self._codec: FrameCodec | None = None
        self._scope: trio.CancelScope | None = None
        self._last_rx = 0.0
        self._waiting = False

    def close_deadline_changed(self, deadline: float) -> None:
        """The connection sent a Close: stop waiting for bytes at ``deadline``."""
        if self._waiting and self._scope is not None:
            self._scope.deadline = deadline

    async def run(self) -> bool:
        """Read and deliver until the connection ends (False) or should be parked (True)."""
        owner = self._owner
        codec = self._codec = FrameCodec(max_message_size=self._home.max_message_size)
        self._last_rx = trio.current_time()
        try:
            while True:
                with trio.CancelScope() as scope:
                    self._scope = scope
                    if await self._pump(codec, scope):
                        return False
                self._scope = None
                # The wait's deadline passed: park, or give up on the peer.
                if owner._closing:
                    if trio.current_time() >= owner._close_deadline and not owner._ended:
                        owner._lost()  # no Close reply in time
                elif not owner._ended and self._can_park(codec):
                    return True
                elif not owner._ended and self._silent_mid_frame():
                    # Slowloris: half a frame, then silence.
                    frame_timeout = self._home.frame_timeout
                    owner._violate(
                        f"no data for {frame_timeout:g} s in the middle of a frame; "
                        f"the frame timeout is {frame_timeout:g} s",
                    )
        finally:
            self._scope = None
            self._codec = None
            self._waiting = False

    def _can_park(self, codec: FrameCodec) -> bool:
        return codec.is_idle and not self._pending and self._owner._may_park()

    def _wait_deadline(self, codec: FrameCodec) -> float:
        owner = self._owner
        if owner._closing:
            return owner._close_deadline
        if self._can_park(codec):
            return self._last_rx + self._home.park_after
        return self._last_rx + self._home.frame_timeout

    def _silent_mid_frame(self) -> bool:
        """True when the frame timeout passed and no byte is waiting to be read."""
        if trio.current_time() < self._last_rx + self._home.frame_timeout:
            return False
        return not self._owner._has_input()

    async def _pump(self, codec: FrameCodec, scope: trio.CancelScope) -> bool:
        """Read and deliver until the connection ends (True) or the wait's deadline passed."""
        owner = self._owner
        if self._pending:
            data, self._pending = self._pending, b""
            if await self._take(codec, data):
                await owner._deliver_terminal()
                return True
        while True:
            if owner._ended:
                await owner._deliver_terminal()
                return True
            try:
                data = owner._recv()
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
                if scope.cancel_called:
                    # Bytes and the deadline arrived together; the scope is
                    # spent, so leave it before calling the sink again.
                    return False
                continue
            except OSError:
                data = b""  # reset or TLS failure: the connection is lost
            if data:
                self._last_rx = trio.current_time()
            await self._take(codec, data)
            # A flood of pings or tiny frames must not starve other tasks.
            await trio.lowlevel.checkpoint()

    async def _take(self, codec: FrameCodec, data: bytes) -> bool:
        """Parse and handle ``data``; True once the connection ended."""
        return await self._handle(codec, codec.receive(data))

    async def _handle(self, codec: FrameCodec, events: list[WsEvent]) -> bool:
        """Handle events in order; return True once the connection ended."""
        owner = self._owner
        rate = self._home.max_messages_per_second
        for event in events:
            if isinstance(event, TextMessage | BinaryMessage):
                if rate is not None and not owner._admit(rate):
                    owner._violate(f"over the limit of {rate:g} messages per second")
                    return True
                try:
                    await self._sink.on_message(event.data)
                except Exception:
                    logger.exception("a WebSocket sink failed on a message; dropped it")
            elif isinstance(event, Ping | Pong):
                if rate is not None and not owner._admit(rate):
                    owner._violate(f"over the limit of {rate:g} messages per second")
                    return True
                if isinstance(event, Ping):
                    owner._send_frame(codec.send_pong(event.payload))
            elif isinstance(event, CloseReceived):
                owner._close_received(event.code, event.reason)
            elif isinstance(event, ProtocolFailure):
                owner._fail(event.code, event.reason)
            else:  # ConnectionLost
                owner._lost()
            if owner._ended:
                return True
        return False
