"""The control channel between a cluster's supervisor and one of its workers.

One ``AF_UNIX`` stream socket pair per worker; each message is one line of
JSON. The worker says ``{"ready": member_id}`` once it serves; the
supervisor says ``{"drain": successor_slot}`` to make a worker hand its
objects and sockets to the successor that runs beside it and exit (a
rolling restart). When the supervisor disappears, the worker sees the end
of the stream and stops: no worker outlives its supervisor.
"""

from __future__ import annotations

import json
from typing import Any, Final

import trio

__all__ = ["ControlChannel"]

_MAX_LINE: Final = 64 * 1024


class ControlChannel:
    """JSON lines over one end of a socket pair.

    Args:
        sock: Our end of the pair.
    """

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self._stream = trio.SocketStream(sock)
        self._buffer = bytearray()
        self._send_lock = trio.Lock()

    async def send(self, message: dict[str, Any]) -> None:
        """Send one message.

        Raises:
            trio.BrokenResourceError: the other side is gone.
        """
        async with self._send_lock:
            await self._stream.send_all(json.dumps(message).encode() + b"\n")

    async def receive(self) -> dict[str, Any] | None:
        """The next message, or ``None`` once the other side closed its end."""
        while True:
            line_end = self._buffer.find(b"\n")
            if line_end >= 0:
                line = bytes(self._buffer[:line_end])
                del self._buffer[: line_end + 1]
                message = json.loads(line)
                if not isinstance(message, dict):
                    raise ValueError(f"a control message must be an object, got {line!r:.80}")
                return message
            if len(self._buffer) > _MAX_LINE:
                raise ValueError("a control message is over 64 KiB")
            try:
                data = await self._stream.receive_some(4096)
            except trio.BrokenResourceError:
                data = b""
            if not data:
                return None
            self._buffer += data

    async def aclose(self) -> None:
        """Close our end."""
        await self._stream.aclose()
