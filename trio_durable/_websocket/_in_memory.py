"""The in-memory transport: the two ends of a ``WebSocketPair`` used in one process.

Used when both ends are accepted in-process (tests, the in-memory client of
``trio_durable.testing.open_websocket``). Each end gets a
:class:`MemoryTransport` that delivers its sends to the other end, in order.
This module knows ends only through :class:`MessageSink` and the small
:class:`PairEnds` access the handle module gives it.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Generic, Protocol, TypeVar

import trio

from .._limits import CloseCode
from ._socket_home import SocketHome
from ._transport import DISCONNECTED_REASON, MessageSink

__all__ = ["MemoryTransport", "PairEnds"]

E = TypeVar("E", bound=MessageSink)
E_contra = TypeVar("E_contra", bound=MessageSink, contravariant=True)


class PairEnds(Protocol[E_contra]):
    """What the transport needs to know of an end, besides its `MessageSink` methods."""

    def is_closed(self, end: E_contra) -> bool:
        """True once ``end`` is closed."""

    def take_now(self, end: E_contra, message: str | bytes) -> bool:
        """Give ``message`` to ``end`` at once if it reads it itself (a standard end).

        Returns False when the message must be delivered through the end's
        sink, in a task (a hibernatable end runs an event of its object).
        """


class MemoryTransport(Generic[E]):
    """Delivers one end's sends to the other end's sink, in-process, in order.

    Deliveries go through a queue drained by one task at a time (spawned in
    the home's connection nursery on demand), because Trio may run freshly
    spawned tasks in any order.
    """

    __slots__ = ("_closing", "_draining", "_ends", "_home", "_queue", "_sender", "_target")

    def __init__(self, sender: E, target: E, home: SocketHome[Any], ends: PairEnds[E]) -> None:
        self._sender = sender
        self._target = target
        self._home = home
        self._ends = ends
        self._closing = False
        self._queue: deque[tuple[str, Any]] = deque()
        self._draining = False

    @property
    def is_open(self) -> bool:
        """True until a Close was sent or the other end closed."""
        return not self._closing and not self._ends.is_closed(self._target)

    def send_message(self, message: str | bytes) -> None:
        """Deliver ``message`` to the other end, after whatever is queued.

        Raises:
            trio.ClosedResourceError: the connection is closing or closed.
        """
        if not self.is_open:
            raise trio.ClosedResourceError("the WebSocket is closed")
        if not self._queue and self._ends.take_now(self._target, message):
            return
        self._enqueue("message", message)

    def send_close(self, code: int, reason: str) -> None:
        """Close both ends (once): the other side answers a Close by itself."""
        if self._closing:
            return
        self._closing = True
        self._enqueue("close", (code, reason, True))

    def abort(self) -> None:
        """Drop the connection: both ends get 1006."""
        ends = self._ends
        if ends.is_closed(self._target) and ends.is_closed(self._sender):
            return
        self._closing = True
        self._enqueue("close", (CloseCode.ABNORMAL, DISCONNECTED_REASON, False))

    def _enqueue(self, kind: str, value: Any) -> None:
        self._queue.append((kind, value))
        if not self._draining:
            self._draining = True
            self._home.connection_nursery.start_soon(self._drain)

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
