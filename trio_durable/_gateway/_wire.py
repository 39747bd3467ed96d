"""The raw socket (plus TLS) of one connection, as the HTTP side uses it.

The gateway drives plain stdlib sockets with ``trio.lowlevel``
(``wait_readable``/``wait_writable``) rather than ``trio.SocketStream``, so
that the same socket, and for TLS the same ``ssl.SSLObject`` over memory
BIOs (:class:`~trio_durable._websocket._tls.TlsState`), can be handed
to the WebSocket transport after an upgrade, and parked.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from typing import Final

import trio

from .._websocket._tls import TlsState

__all__ = ["Wire", "WriteTimeoutError"]

_RECV_SIZE: Final = 65536
# After an error answer, how long the client's remaining input is drained
# (so that closing does not reset the connection before it read the answer).
_LINGER_TIMEOUT: Final = 1.0


class WriteTimeoutError(trio.BrokenResourceError):
    """The client took no byte of what the gateway was writing for ``write_timeout``."""


class Wire:
    """A raw non-blocking socket (plus TLS), used by one task at a time.

    Args:
        sock: The accepted, non-blocking socket.
        tls: The TLS session on it, or ``None`` for plain TCP.
        write_timeout: Seconds the peer may take no byte of what is being
            sent before :class:`WriteTimeoutError`.
    """

    __slots__ = ("sock", "tls", "write_timeout")

    def __init__(self, sock: socket.socket, tls: TlsState | None, write_timeout: float) -> None:
        self.sock = sock
        self.tls = tls
        self.write_timeout = write_timeout

    async def handshake(self) -> None:
        """Run the TLS handshake (only for TLS wires).

        Raises:
            trio.BrokenResourceError: The peer left during the handshake.
            OSError: The socket or TLS failed (``ssl.SSLError`` is one).
        """
        tls = self.tls
        assert tls is not None
        while True:
            try:
                tls.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._send_raw(tls.outgoing.read())
                raw = await self._recv_raw()
                if not raw:
                    raise trio.BrokenResourceError(
                        "the peer left during the TLS handshake"
                    ) from None
                tls.incoming.write(raw)
        await self._send_raw(tls.outgoing.read())

    async def receive_some(self) -> bytes:
        """Plaintext bytes from the peer; ``b""`` at the end of the stream."""
        sock, tls = self.sock, self.tls
        while True:
            try:
                if tls is None:
                    return sock.recv(_RECV_SIZE)
                data, to_send = tls.recv(sock)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(sock)
                continue
            if to_send:
                await self._send_raw(to_send)
            return data

    async def send_all(self, data: bytes) -> None:
        """Send all of ``data`` (encrypted on a TLS wire).

        Raises:
            WriteTimeoutError: The peer took nothing for ``write_timeout``.
            OSError: The socket failed.
        """
        if self.tls is not None:
            data = self.tls.encrypt(data)
        await self._send_raw(data)

    async def _recv_raw(self) -> bytes:
        while True:
            try:
                return self.sock.recv(_RECV_SIZE)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self.sock)

    async def _send_raw(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                sent = self.sock.send(view)
            except BlockingIOError:
                # A client that reads nothing must not hold this task forever.
                with trio.move_on_after(self.write_timeout) as scope:
                    await trio.lowlevel.wait_writable(self.sock)
                if scope.cancelled_caught:
                    raise WriteTimeoutError(
                        f"the client took no data for {self.write_timeout:g} s with "
                        f"{len(view):,} bytes left to send; the write timeout is "
                        f"{self.write_timeout:g} s"
                    ) from None
            else:
                view = view[sent:]

    async def linger(self) -> None:
        """Half-close, then read and drop what the client still sends, briefly.

        Closing a socket with unread input makes the kernel reset the
        connection, which can destroy our answer before the client reads it
        (typically a 413 while the client is still sending its body). A
        client that reads until EOF sees it at once.
        """
        with trio.move_on_after(_LINGER_TIMEOUT):
            try:
                if self.tls is not None:
                    with contextlib.suppress(ssl.SSLError):
                        self.tls.obj.unwrap()  # queue our close_notify
                    await self._send_raw(self.tls.outgoing.read())
                self.sock.shutdown(socket.SHUT_WR)
                while await self._recv_raw():
                    pass
            except (OSError, trio.BrokenResourceError):
                pass

    def close(self) -> None:
        """Close the socket (idempotent); a task waiting on it is woken."""
        if self.sock.fileno() == -1:
            return
        trio.lowlevel.notify_closing(self.sock)
        self.sock.close()
