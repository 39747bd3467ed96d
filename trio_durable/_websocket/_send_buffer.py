"""The writer side of a connection: output the kernel has not taken yet, and its drain.

Sends never block (``Transport.send_message`` is synchronous). The
connection writes each frame straight to the socket; only what the kernel
does not take lands in a :class:`SendBuffer`, which a *writer* task drains
with `trio.lowlevel.wait_writable`. A buffer exists only while it holds
bytes, so an idle (or parked) connection keeps none, and the writer task
lives exactly as long as its buffer.

Whole frames are kept (on a TLS connection, the records of whole frames),
the first one possibly partly sent. Keeping the boundaries lets a connection
that gives up on a slow client finish the frame under way and still send a
well-framed Close after it (see `SendBuffer.unfinished`). How much may be
buffered, and what happens to a client over the limit, is the connection's
policy, not the buffer's.
"""

from __future__ import annotations

import socket
from collections import deque
from itertools import islice
from typing import Final, Protocol

import trio

__all__ = ["SendBuffer", "WriterOwner"]

# Buffers handed to one sendmsg call (Linux IOV_MAX is 1024).
_MAX_IOV: Final = 512


class WriterOwner(Protocol):
    """What a buffer's writer task needs from its connection."""

    @property
    def close_deadline(self) -> float:
        """When (Trio time) a closing connection gives up on its peer; ``inf`` if not closing."""

    def flushed(self, buffer: SendBuffer) -> None:
        """``buffer`` is empty: new output may go straight to the socket again."""

    def connection_lost(self) -> None:
        """The socket failed, or the peer did not take our last bytes in time."""


class SendBuffer:
    """Unsent output of one connection, oldest first.

    Also holds what a connection sends before it is started (the gateway
    binds a handle, which may send at once, before the 101 response is
    written); such a buffer is never drained, only emptied by `pop_all`.
    """

    __slots__ = ("_frames", "_head", "_scope", "size")

    def __init__(self) -> None:
        self._frames: deque[bytes] = deque()
        self._head = 0  # bytes of _frames[0] already sent
        self._scope: trio.CancelScope | None = None
        #: Unsent bytes.
        self.size = 0

    def __bool__(self) -> bool:
        return bool(self._frames)

    def append(self, data: bytes, *, sent: int = 0) -> None:
        """Queue ``data`` (of which the first ``sent`` bytes already left, for an empty buffer)."""
        if not self._frames:
            self._head = sent
        self._frames.append(data)
        self.size += len(data) - sent

    def pop_all(self) -> list[bytes]:
        """Take every frame out, whole (only for a buffer that never sent anything)."""
        frames = list(self._frames)
        self.discard()
        return frames

    def discard(self) -> None:
        """Forget everything (the connection is gone); a waiting writer ends."""
        self._frames.clear()
        self._head = 0
        self.size = 0

    def unfinished(self) -> memoryview | None:
        """The rest of a frame the peer has started to receive, if any."""
        if self._frames and self._head:
            return memoryview(self._frames[0])[self._head :]
        return None

    def take_unsent(self) -> bytes:
        """Every byte not sent yet, in order, and stop the writer (the connection moves away)."""
        frames = list(self._frames)
        if frames and self._head:
            frames[0] = frames[0][self._head :]
        self.discard()
        if self._scope is not None:
            self._scope.cancel()
        return b"".join(frames)

    def set_deadline(self, deadline: float) -> None:
        """Give up on the peer at ``deadline`` (Trio time): the connection is closing."""
        if self._scope is not None:
            self._scope.deadline = deadline

    def flush(self, sock: socket.socket) -> None:
        """Send as much as the kernel takes now, without waiting.

        Raises:
            OSError: The connection failed (not ``BlockingIOError``).
        """
        frames = self._frames
        if not frames:
            return
        buffers: list[bytes | memoryview] = list(islice(frames, _MAX_IOV))
        if self._head:
            buffers[0] = memoryview(buffers[0])[self._head :]
        try:
            sent = sock.sendmsg(buffers)
        except BlockingIOError:
            return
        self.size -= sent
        sent += self._head
        while frames and sent >= len(frames[0]):
            sent -= len(frames.popleft())
        self._head = sent

    async def drain(self, sock: socket.socket, owner: WriterOwner) -> None:
        """The writer task: wait for room, flush, until empty, failed or out of time.

        Runs in the connection nursery. The deadline is the close deadline:
        a connection that is closing gives its peer that long to take the
        rest. Cancellation (the runtime stopping) just ends it; the
        connection's shutdown closes the socket.
        """
        try:
            with trio.CancelScope(deadline=owner.close_deadline) as scope:
                self._scope = scope
                while self._frames:
                    try:
                        await trio.lowlevel.wait_writable(sock)
                    except trio.ClosedResourceError:  # the connection closed meanwhile
                        return
                    try:
                        self.flush(sock)
                    except OSError:
                        owner.connection_lost()
                        return
        finally:
            self._scope = None
        if scope.cancelled_caught:
            if self._frames:  # out of time; an emptied buffer was taken away instead
                owner.connection_lost()
        else:
            owner.flushed(self)
