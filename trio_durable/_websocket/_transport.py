"""The seam between a WebSocket handle and the connection that carries it.

A :class:`~trio_durable._websocket._socket.WebSocket` (what objects hold)
never touches bytes. Outgoing, it talks to a :class:`Transport`; incoming, the
transport calls the handle's :class:`MessageSink` methods. Three transports
exist: the network one (``NetworkTransport`` in ``_network.py``: a TCP/TLS
connection served by the gateway, parked while idle), the in-memory one
(``MemoryTransport`` in ``_in_memory.py``: the two ends of a ``WebSocketPair``
used in the same process, as by ``trio_durable.testing.open_websocket``), and
the trio-websocket one (``TrioWebSocketTransport`` in ``_interop.py``:
outbound sockets and connections handed over by ``hand_over_websocket``).

Rules every transport follows:

* ``send_message`` / ``close`` never block: data is written at once when the
  socket can take it, otherwise buffered in a bounded per-connection buffer;
  a peer that lets the buffer overflow is disconnected (close 1013) and its
  sink gets ``on_close(1006, ..., False)``. Order of sends is preserved.
* The transport answers protocol pings and the peer's Close frame itself.
* Inbound events are delivered one at a time, in arrival order: the transport
  awaits each sink call before delivering the next.
* Exactly one terminal event per connection: ``on_close`` (Close frame:
  ``was_clean=True``, 1005 for an empty one; dropped connection:
  ``1006, DISCONNECTED_REASON, False``) or ``on_error`` (protocol violation;
  the transport has already sent the Close frame with the right code).
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["DISCONNECTED_REASON", "SLOW_CLIENT_REASON", "MessageSink", "Transport"]

#: The reason given with code 1006 when the peer vanished without a Close frame.
DISCONNECTED_REASON = "WebSocket disconnected without sending Close frame."
#: The close reason sent to a client that does not read fast enough (code 1013).
SLOW_CLIENT_REASON = "slow client: send buffer full"


class Transport(Protocol):
    """The outgoing side of one WebSocket connection."""

    def send_message(self, message: str | bytes) -> None:
        """Queue a text (``str``) or binary (``bytes``) message; never blocks.

        Raises:
            trio.ClosedResourceError: the connection is closing or closed.
        """

    def send_close(self, code: int, reason: str) -> None:
        """Start the closing handshake (no-op if a Close was already sent)."""

    def abort(self) -> None:
        """Drop the connection now, without a Close frame (idempotent)."""

    @property
    def is_open(self) -> bool:
        """True until a Close was sent or received, or the connection dropped."""


class MessageSink(Protocol):
    """Where a transport delivers what it receives."""

    async def on_message(self, message: str | bytes) -> None:
        """A whole text (``str``) or binary (``bytes``) message arrived."""

    async def on_close(self, code: int, reason: str, was_clean: bool) -> None:
        """The connection ended (terminal)."""

    async def on_error(self, error: BaseException) -> None:
        """The peer violated the protocol; the connection is closed (terminal)."""
