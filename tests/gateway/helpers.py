"""Test helpers: a recording sink, raw WebSocket frames, a tiny HTTP client."""

from __future__ import annotations

import os
import socket
import struct
from typing import Any

import h11
import trio
from websockets.frames import Frame, Opcode

#: Seconds a test waits for what normally takes milliseconds. Only a hang
#: takes longer, even on a loaded machine; no test asserts a time with it.
PATIENCE = 10.0


class FakeSink:
    """A MessageSink that records what it gets, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self._changed = trio.Event()

    def _record(self, event: tuple[Any, ...]) -> None:
        self.events.append(event)
        self._changed.set()
        self._changed = trio.Event()

    async def on_message(self, message: str | bytes) -> None:
        self._record(("message", message))

    async def on_close(self, code: int, reason: str, was_clean: bool) -> None:
        self._record(("close", code, reason, was_clean))

    async def on_error(self, error: BaseException) -> None:
        self._record(("error", error))

    async def wait_for(self, count: int, within: float = PATIENCE) -> list[tuple[Any, ...]]:
        """Wait until ``count`` events arrived; return them all."""
        with trio.fail_after(within):
            while len(self.events) < count:
                await self._changed.wait()
        return self.events

    @property
    def terminal_events(self) -> list[tuple[Any, ...]]:
        return [event for event in self.events if event[0] in ("close", "error")]


async def read_http_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """Read from a non-blocking socket up to the end of an HTTP head."""
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = sock.recv(65536)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(sock)
            continue
        if not chunk:
            raise EOFError("the peer closed during the handshake")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def client_frame(opcode: Opcode, payload: bytes, *, fin: bool = True) -> bytes:
    """A masked frame as a client sends it."""
    return Frame(opcode, payload, fin=fin).serialize(mask=True)


def masked_close(code: int | None = None, reason: bytes = b"") -> bytes:
    payload = b"" if code is None else struct.pack("!H", code) + reason
    return client_frame(Opcode.CLOSE, payload)


def read_server_frame(sock: socket.socket) -> tuple[int, bytes]:
    """Blocking: read one unmasked server frame; return (opcode, payload)."""

    def exact(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise EOFError(f"connection closed after {len(data)} of {n} bytes")
            data += chunk
        return data

    first, second = exact(2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", exact(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", exact(8))
    return first & 0x0F, exact(length)


def read_until_eof(sock: socket.socket) -> bytes:
    """Blocking: everything until the peer closes (ECONNRESET counts as the end)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def random_key() -> str:
    import base64

    return base64.b64encode(os.urandom(16)).decode()


class HttpClient:
    """A minimal HTTP/1.1 client on h11 and a trio stream (keep-alive capable)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)

    @classmethod
    async def connect(cls, port: int, ssl_context: Any = None) -> HttpClient:
        stream: trio.abc.Stream = await trio.open_tcp_stream("127.0.0.1", port)
        if ssl_context is not None:
            stream = trio.SSLStream(stream, ssl_context, server_hostname="127.0.0.1")
        return cls(stream)

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        headers: list[tuple[str, str]] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        fields = [("host", "example.test"), *(headers or [])]
        if body:
            fields.append(("content-length", str(len(body))))
        data = self.conn.send(h11.Request(method=method, target=path, headers=fields))
        if body:
            data += self.conn.send(h11.Data(data=body))
        data += self.conn.send(h11.EndOfMessage())
        await self.stream.send_all(data)
        return await self.read_response()

    async def read_response(self) -> tuple[int, dict[str, str], bytes]:
        status = 0
        headers: dict[str, str] = {}
        body = b""
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(bytes(await self.stream.receive_some(65536)))
            elif isinstance(event, h11.Response):
                status = event.status_code
                headers = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return status, headers, body
            else:
                raise AssertionError(f"unexpected {event!r}")

    async def aclose(self) -> None:
        await self.stream.aclose()


async def raw_exchange(port: int, data: bytes, within: float = PATIENCE) -> bytes:
    """Send raw bytes, return everything the server sends until it closes."""
    with trio.fail_after(within):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(data)
            received = b""
            try:
                while chunk := await stream.receive_some(65536):
                    received += chunk
            except trio.BrokenResourceError:
                pass
            return received
