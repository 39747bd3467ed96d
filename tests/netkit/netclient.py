"""A raw WebSocket client on a Trio stream: it sends exactly the bytes a test wants.

Independent of our codec: frames are built with the ``websockets`` library's
serializer (or by hand), and server frames are parsed here.
"""

from __future__ import annotations

import base64
import os
import struct
from collections.abc import Awaitable, Callable

import trio
from websockets.frames import Frame, Opcode

import trio_durable as td

Worker = Callable[[td.Request, td.Runtime], Awaitable[td.Response]]

#: Every client stream a test opened; the ``close_clients`` fixture closes them.
OPEN_STREAMS: list[trio.SocketStream] = []


def upgrade_head(path: str, *, key: str | None = None, extra: str = "") -> bytes:
    key = key if key is not None else base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: 13\r\n{extra}\r\n"
    ).encode()


def frame(opcode: Opcode, payload: bytes, *, fin: bool = True) -> bytes:
    """A masked frame, as a client sends it."""
    return Frame(opcode, payload, fin=fin).serialize(mask=True)


class RawWs:
    """One raw client connection (after or before the handshake)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        OPEN_STREAMS.append(stream)
        self.buffer = bytearray()
        self.status = 0

    @classmethod
    async def connect(cls, port: int, path: str, *, extra: str = "", within: float = 2.0) -> RawWs:
        """Connect and complete the opening handshake (expects 101)."""
        with trio.fail_after(within):
            client = cls(await trio.open_tcp_stream("127.0.0.1", port))
            await client.stream.send_all(upgrade_head(path, extra=extra))
            head = await client.read_head()
        assert head.startswith(b"HTTP/1.1 101 "), head
        return client

    async def read_head(self) -> bytes:
        while b"\r\n\r\n" not in self.buffer:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise EOFError(f"closed during the handshake: {self.buffer!r}")
            self.buffer += chunk
        head, _, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        self.buffer = bytearray(rest)
        self.status = int(head.split(b" ", 2)[1])
        return head

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def send_text(self, text: str) -> None:
        await self.send(frame(Opcode.TEXT, text.encode()))

    async def _exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise EOFError(f"closed after {len(self.buffer)} of {n} bytes")
            self.buffer += chunk
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    async def receive_frame(self, within: float = 2.0) -> tuple[int, bytes]:
        """The next server frame as (opcode, payload)."""
        with trio.fail_after(within):
            first, second = await self._exactly(2)
            length = second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await self._exactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await self._exactly(8))
            return first & 0x0F, await self._exactly(length)

    async def receive_text(self, within: float = 2.0) -> str:
        opcode, payload = await self.receive_frame(within)
        assert opcode == Opcode.TEXT, (opcode, payload)
        return payload.decode()

    async def receive_close(self, within: float = 2.0) -> tuple[int, str]:
        """Skip data frames until a Close; return its code and reason."""
        while True:
            opcode, payload = await self.receive_frame(within)
            if opcode == Opcode.CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if payload else 1005
                return code, payload[2:].decode()

    async def receive_eof(self, within: float = 2.0) -> bytes:
        """Everything until the server closes TCP."""
        data, self.buffer = bytes(self.buffer), bytearray()
        with trio.fail_after(within):
            try:
                while chunk := await self.stream.receive_some(65536):
                    data += chunk
            except trio.BrokenResourceError:
                pass
        return data

    async def aclose(self) -> None:
        await self.stream.aclose()


async def raw_http(
    port: int, data: bytes, *, within: float = 2.0, half_close: bool = True
) -> bytes:
    """Send ``data`` (then EOF), return everything until the server closes."""
    with trio.fail_after(within):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(data)
            if half_close:
                await stream.send_eof()
            received = b""
            try:
                while chunk := await stream.receive_some(65536):
                    received += chunk
            except trio.BrokenResourceError:
                pass
            return received
