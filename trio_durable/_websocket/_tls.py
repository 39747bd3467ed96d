"""TLS for a parked connection: an ``ssl.SSLObject`` over memory BIOs on a raw socket.

``ssl.SSLSocket`` owns its socket and blocks in ways Trio cannot wait on,
and ``trio.SSLStream`` needs a task to drive it. A hibernated connection has
neither to spare. :class:`TlsState` keeps only the TLS session (two memory
BIOs and the ``SSLObject``) and is driven on the same non-blocking stdlib
socket that the parking watches, so a TLS connection is parked like a plain
one whenever the session holds no received byte (:attr:`TlsState.is_empty`).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from typing import Final

__all__ = ["TlsState"]

#: Bytes of ciphertext read from the socket at a time.
_RECV_SIZE: Final = 65536


class TlsState:
    """A server-side TLS session over memory BIOs, driven on a raw socket.

    The gateway makes it, does the handshake and the HTTP exchange through
    it, then hands it to the connection of an upgraded WebSocket.

    Args:
        context: The server's ``ssl.SSLContext``.
    """

    __slots__ = ("incoming", "obj", "outgoing")

    def __init__(self, context: ssl.SSLContext) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = context.wrap_bio(self.incoming, self.outgoing, server_side=True)

    @property
    def is_empty(self) -> bool:
        """True when no received byte waits inside TLS (undecrypted or decrypted).

        Only then may the connection be parked: the parking wakes a socket
        on kernel readability, which never fires for bytes already pulled
        into the session.
        """
        return self.incoming.pending == 0 and self.obj.pending() == 0

    def encrypt(self, data: bytes) -> bytes:
        """Turn plaintext into TLS records (never blocks: the BIO grows).

        Raises:
            ssl.SSLError: The TLS session is broken.
        """
        self.obj.write(data)
        return self.outgoing.read()

    def recv(self, sock: socket.socket) -> tuple[bytes, bytes]:
        """Read plaintext, pulling ciphertext from ``sock`` as needed.

        Returns:
            ``(plaintext, to_send)``: ``b""`` plaintext means the peer ended
            the stream; ``to_send`` is TLS output produced by reading (session
            tickets, key updates, alerts) that the caller must send in order.

        Raises:
            BlockingIOError: Nothing to read now; wait for the socket.
            OSError: The socket failed (also ``ssl.SSLError``).
        """
        obj = self.obj
        while True:
            try:
                data = obj.read(_RECV_SIZE)
            except ssl.SSLWantReadError:
                pass
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b"", self.outgoing.read()
            else:
                return data, self.outgoing.read()
            raw = sock.recv(_RECV_SIZE)
            if raw:
                self.incoming.write(raw)
            else:
                self.incoming.write_eof()

    def close_notify(self) -> bytes:
        """End the session in order (a TLS ``close_notify``) if it fits now.

        Returns:
            The records to send (``b""`` when the session is broken). The
            peer's own ``close_notify`` is not waited for.
        """
        # unwrap() writes our close_notify, then raises while the peer's is unread.
        with contextlib.suppress(OSError, ssl.SSLError):
            self.obj.unwrap()
        return self.outgoing.read()
