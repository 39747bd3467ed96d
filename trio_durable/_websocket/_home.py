"""What the network connections of one gateway share: settings, nursery, parking.

One :class:`ConnectionHome` per ``serve()`` call, so that each connection
holds a single reference for all of it (a parked connection pays for every
field it has). The gateway checks its options once, when ``serve()`` is
called, and builds the home from the checked values; the home takes them as
they are.
"""

from __future__ import annotations

from typing import Protocol

import trio

from .._limits import CLOSE_TIMEOUT, FRAME_TIMEOUT, MAX_MESSAGE_SIZE, PARK_AFTER, SEND_BUFFER_LIMIT
from ._delivery import CodecPool
from ._parking import SocketParking

__all__ = ["ConnectionHome", "HomedConnection"]


class HomedConnection(Protocol):
    """What the home needs from each of its open connections."""

    def shutdown(self) -> None:
        """The runtime is stopping: send Close 1001 where it fits, close, tell nobody."""


class ConnectionHome:
    """The settings, nursery and parking shared by the network connections of one gateway.

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
        "delivery",
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
        park_after: float = PARK_AFTER,
        send_buffer_limit: int = SEND_BUFFER_LIMIT,
        max_message_size: int = MAX_MESSAGE_SIZE,
        close_timeout: float = CLOSE_TIMEOUT,
        frame_timeout: float = FRAME_TIMEOUT,
        max_messages_per_second: float | None = None,
    ) -> None:
        self.nursery = nursery
        self.parking = parking
        self.park_after = park_after
        self.send_buffer_limit = send_buffer_limit
        self.max_message_size = max_message_size
        self.close_timeout = close_timeout
        self.frame_timeout = frame_timeout
        self.max_messages_per_second = max_messages_per_second
        #: Idle codecs, lent to the readers of woken connections.
        self.delivery = CodecPool(max_message_size)
        #: Open connections (started, TCP not yet closed). A dict as an
        #: ordered set: it keeps parked connections, which no task holds,
        #: reachable for shutdown.
        self.connections: dict[HomedConnection, None] = {}

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
                connection.shutdown()
