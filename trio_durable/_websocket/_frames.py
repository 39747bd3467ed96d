"""A small sans-IO WebSocket frame codec for the server side.

`FrameCodec` turns bytes from a client into whole-message events and turns
messages into frames. It does no I/O and never blocks, so it is tested with
plain synchronous tests.

It is a thin layer over the frame parser and serializer of the ``websockets``
library (``websockets.frames``), which ``benchmarks/bench_codec.py`` measured
at 2-5x the speed of wsproto (parse and echo). We drive ``Frame.parse`` with our own loop
rather than ``websockets.protocol.Protocol`` because we want: no automatic
replies (the connection layer decides what to send), no per-object UUID and
logger (a codec is rebuilt on every wake-up of a hibernated socket), a clean
answer to "is a frame half-read?" for `FrameCodec.is_idle`, and the message
size limit applied across fragments.

The opening handshake is done elsewhere (h11); a codec starts in the OPEN
state. permessage-deflate is never negotiated: a compression context would be
state that outlives a frame, and a parked (hibernated) socket must keep none.

Frames a server sends are unmasked, so the same bytes can go to every
recipient of a broadcast, and a parked socket (which has no codec) can be
written to: the module-level `serialize_message` and `serialize_close` build
frames without a codec.
"""

from __future__ import annotations

import base64
import codecs
import hashlib
import struct
from collections.abc import Generator
from typing import Final, TypeAlias

import attrs
import trio
from websockets.exceptions import PayloadTooBig, ProtocolError
from websockets.frames import Close, Frame, Opcode

try:  # the C version, when websockets was built with its speedups
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover
    from websockets.utils import apply_mask
from websockets.streams import StreamReader

from .._exceptions import LimitExceededError
from .._limits import (
    MAX_CLOSE_REASON_BYTES,
    MAX_MESSAGE_SIZE,
    SENDABLE_CLOSE_CODES,
    UNSENDABLE_CLOSE_CODES,
    CloseCode,
)
from ._checks import check_utf8_size

__all__ = [
    "BinaryMessage",
    "CloseArgumentTypeError",
    "CloseReceived",
    "ConnectionLost",
    "FrameCodec",
    "Ping",
    "Pong",
    "ProtocolFailure",
    "TextMessage",
    "WsEvent",
    "accept_key",
    "parse_simple",
    "serialize_close",
    "serialize_message",
    "validate_close",
]

# RFC 6455 section 1.3.
_ACCEPT_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# Control frames carry at most 125 bytes; a ping in the middle of a nearly
# full fragmented message must not be mistaken for an oversized message.
_MAX_CONTROL_PAYLOAD: Final = 125


# --- events -----------------------------------------------------------------


@attrs.frozen
class TextMessage:
    """A whole text message (fragments already joined and UTF-8 decoded)."""

    data: str


@attrs.frozen
class BinaryMessage:
    """A whole binary message (fragments already joined)."""

    data: bytes


@attrs.frozen
class Ping:
    """A Ping frame; the caller owes the peer ``send_pong(payload)``."""

    payload: bytes


@attrs.frozen
class Pong:
    """A Pong frame."""

    payload: bytes


@attrs.frozen
class CloseReceived:
    """The peer sent a Close frame; an empty one gives code 1005 and reason ``""``.

    The codec reads nothing after it. The caller owes the peer a Close frame
    (usually echoing ``code``, or 1000 when ``code`` is 1005) unless it
    already sent one, then closes the TCP connection.
    """

    code: int
    reason: str


@attrs.frozen
class ProtocolFailure:
    """The peer broke the protocol; the caller should close with ``code``.

    ``code`` is 1002 (protocol error), 1007 (invalid UTF-8 in a text message
    or close reason) or 1009 (message over the size limit). ``reason`` fits in
    a Close frame. The codec reads nothing after it.
    """

    code: int
    reason: str


@attrs.frozen
class ConnectionLost:
    """The TCP stream ended without a Close frame (close code 1006)."""


WsEvent: TypeAlias = (
    TextMessage | BinaryMessage | Ping | Pong | CloseReceived | ProtocolFailure | ConnectionLost
)


# --- module-level helpers ----------------------------------------------------


def accept_key(sec_websocket_key: str) -> str:
    """Compute the ``Sec-WebSocket-Accept`` value for a handshake (RFC 6455 section 4.2.2).

    Args:
        sec_websocket_key: The client's ``Sec-WebSocket-Key`` header value.

    Returns:
        The base64 SHA-1 of the key joined with the RFC's GUID.
    """
    digest = hashlib.sha1(sec_websocket_key.strip().encode("ascii") + _ACCEPT_GUID).digest()
    return base64.b64encode(digest).decode("ascii")


class CloseArgumentTypeError(TypeError, ValueError):
    """A close code that is not an int, or a close reason that is not a str.

    A ``TypeError``, as any argument of the wrong type; and a ``ValueError``
    too, since ``WebSocket.close()`` promises one for anything but an
    allowed code and reason.
    """


def validate_close(code: int, reason: str) -> None:
    """Check a close code and reason that we are about to send.

    Allowed: codes 1000-4999 except 1004, 1005, 1006 and 1015 (RFC 6455
    section 7.4.1 forbids sending those), and a reason of at most 123 UTF-8
    bytes.

    Args:
        code: The close code.
        reason: The close reason.

    Raises:
        CloseArgumentTypeError: The code is not an int, or the reason not a
            str (a ``TypeError`` and a ``ValueError``).
        ValueError: The code is not allowed.
        LimitExceededError: The reason is over 123 bytes (a ``ValueError`` too).
    """
    if not isinstance(code, int) or isinstance(code, bool):
        raise CloseArgumentTypeError(f"close code must be an int, got {code!r}")
    if not isinstance(reason, str):
        raise CloseArgumentTypeError(f"close reason must be a str, got {reason!r}")
    if code not in SENDABLE_CLOSE_CODES:
        low, high = SENDABLE_CLOSE_CODES[0], SENDABLE_CLOSE_CODES[-1]
        raise ValueError(f"close code {code} is outside the allowed range {low}-{high}")
    if code in UNSENDABLE_CLOSE_CODES:
        raise ValueError(
            f"close code {code} is reserved and may not be sent (1004, 1005, 1006 and 1015 are)"
        )
    check_utf8_size("close reason", reason, MAX_CLOSE_REASON_BYTES)


_PACK_16 = struct.Struct("!BBH").pack
_PACK_64 = struct.Struct("!BBQ").pack
_FIN_TEXT = 0x80 | 0x1
_FIN_BINARY = 0x80 | 0x2
_FIN_DATA = (_FIN_TEXT, _FIN_BINARY)

# The last message serialized and its frame: a broadcast sends the same
# object to every socket, so it is serialized once, not once per socket.
_last_message: str | bytes | None = None
_last_frame = b""


def serialize_message(data: str | bytes) -> bytes:
    """Build one unmasked server frame: text for ``str``, binary for ``bytes``.

    Needs no codec, so it serves broadcasts (serialize once, write to many)
    and parked sockets. The header is packed by hand (RFC 6455 §5.2): the
    generic frame builder costs five times as much, and a broadcast to
    thousands of sockets pays it for every socket.

    Args:
        data: The message.

    Returns:
        The frame's bytes.
    """
    global _last_message, _last_frame
    if data is _last_message:
        return _last_frame
    if isinstance(data, str):
        payload = data.encode("utf-8")
        first = _FIN_TEXT
    else:
        payload = bytes(data)
        first = _FIN_BINARY
    size = len(payload)
    if size < 126:
        frame = bytes((first, size)) + payload
    elif size < 65536:
        frame = _PACK_16(first, 126, size) + payload
    else:
        frame = _PACK_64(first, 127, size) + payload
    _last_message, _last_frame = data, frame
    return frame


def parse_simple(data: bytes, max_size: int) -> list[str | bytes] | None:
    """The messages of ``data`` if it is nothing but whole single-frame messages; else ``None``.

    The fast path of the common case (a client's small text or binary
    messages, each in one masked frame, and a read that ends at a frame
    boundary): no generator, no frame object, no event object per message.
    Anything else, control frames, fragments, a frame cut by the read, a
    frame over ``max_size``, an unmasked frame, reserved bits, invalid UTF-8,
    gives ``None`` and nothing is consumed: the caller hands the same bytes
    to an idle :class:`FrameCodec`, which decides (and reports failures)
    exactly as always.

    Args:
        data: Bytes read from the client (not empty).
        max_size: The largest message accepted.
    """
    messages: list[str | bytes] = []
    end = len(data)
    pos = 0
    while pos < end:
        if end - pos < 6:
            return None
        first = data[pos]
        size = data[pos + 1]
        # FIN, no reserved bits, text or binary; masked (as a client must).
        if first not in _FIN_DATA or size < 0x80:
            return None
        size &= 0x7F
        if size < 126:
            head = pos + 2
        elif size == 126:
            size = (data[pos + 2] << 8) | data[pos + 3]
            head = pos + 4
        else:
            return None
        if size > max_size:
            return None
        stop = head + 4 + size
        if stop > end:
            return None
        payload = apply_mask(data[head + 4 : stop], data[head : head + 4])
        if first == _FIN_TEXT:
            try:
                messages.append(payload.decode("utf-8"))
            except UnicodeDecodeError:
                return None
        else:
            messages.append(payload)
        pos = stop
    return messages


def serialize_close(code: int = CloseCode.NORMAL, reason: str = "") -> bytes:
    """Build a Close frame after checking it with `validate_close`.

    Args:
        code: The close code.
        reason: The close reason.

    Returns:
        The frame's bytes.

    Raises:
        ValueError: See `validate_close`.
    """
    validate_close(code, reason)
    # Packed by hand: websockets' Close.serialize refuses 1016-2999, which
    # `validate_close` lets an object send.
    payload = struct.pack("!H", code) + reason.encode("utf-8")
    return Frame(Opcode.CLOSE, payload).serialize(mask=False)


def _control_frame(opcode: Opcode, payload: bytes) -> bytes:
    if len(payload) > _MAX_CONTROL_PAYLOAD:
        raise LimitExceededError(
            f"{opcode.name.lower()} payload is {len(payload)} bytes; "
            f"the limit is {_MAX_CONTROL_PAYLOAD}"
        )
    return Frame(opcode, bytes(payload)).serialize(mask=False)


def _fit_reason(reason: str) -> str:
    """Cut a reason to what a Close frame can carry, on a character boundary."""
    raw = reason.encode("utf-8")
    if len(raw) <= MAX_CLOSE_REASON_BYTES:
        return reason
    return raw[:MAX_CLOSE_REASON_BYTES].decode("utf-8", errors="ignore")


# --- the codec ---------------------------------------------------------------


class FrameCodec:
    """Server-side, sans-IO frame codec in the OPEN state from construction.

    Cheap to drop and rebuild: between complete messages its only state is
    whether a Close was sent or received (see `is_idle`).

    Receiving: `receive` takes bytes from the client (``b""`` for EOF) and
    returns whole-message events. After a `CloseReceived`, `ProtocolFailure`
    or `ConnectionLost` it reads nothing more. It never answers by itself:
    the caller sends the Pong for a Ping and the Close reply.

    Sending: the ``send_*`` methods return the bytes to write. After
    `send_close` only control frames other than Close may be sent.

    Args:
        max_message_size: Largest received message, in bytes; a bigger one
            gives ``ProtocolFailure(1009, ...)``, detected from the frame
            header before the payload is buffered.
    """

    __slots__ = (
        "_at_boundary",
        "_binary_parts",
        "_close_received",
        "_close_sent",
        "_decoder",
        "_events",
        "_finished",
        "_max_message_size",
        "_message_opcode",
        "_message_size",
        "_parser",
        "_reader",
        "_text_parts",
    )

    def __init__(self, *, max_message_size: int = MAX_MESSAGE_SIZE) -> None:
        if max_message_size < 1:
            raise ValueError(f"max_message_size must be positive, not {max_message_size}")
        self._max_message_size = max_message_size
        self._reader = StreamReader()
        self._events: list[WsEvent] = []
        # True while the parser waits for the first byte of a frame.
        self._at_boundary = True
        # The message being reassembled from fragments, if any.
        self._message_opcode: Opcode | None = None
        self._message_size = 0
        self._text_parts: list[str] = []
        self._binary_parts: list[bytes] = []
        self._decoder: codecs.IncrementalDecoder | None = None
        self._close_sent = False
        self._close_received = False
        # Set once the peer's stream is over for us: Close, failure or EOF.
        self._finished = False
        self._parser = self._parse()
        next(self._parser)

    # -- state --------------------------------------------------------------

    @property
    def is_idle(self) -> bool:
        """True when dropping this codec and building a fresh one loses nothing.

        That is: no partial frame or fragmented message is buffered, and no
        Close was sent or received (a closing socket is not parked).
        """
        return (
            self._at_boundary
            and self._message_opcode is None
            and not self._close_sent
            and not self._close_received
            and not self._finished
        )

    @property
    def close_sent(self) -> bool:
        """True once `send_close` produced a Close frame."""
        return self._close_sent

    @property
    def close_received(self) -> bool:
        """True once the peer's Close frame was parsed."""
        return self._close_received

    @property
    def max_message_size(self) -> int:
        """Largest received message accepted, in bytes."""
        return self._max_message_size

    # -- receiving ----------------------------------------------------------

    def receive(self, data: bytes) -> list[WsEvent]:
        """Feed bytes from the client and return the events they complete.

        Args:
            data: Bytes read from the socket; ``b""`` means the peer closed
                its side (EOF).

        Returns:
            Events in arrival order. Data after the first `CloseReceived`,
            `ProtocolFailure` or `ConnectionLost` is ignored.
        """
        if self._finished:
            return []
        if data:
            self._reader.feed_data(data)
        else:
            self._reader.feed_eof()
        try:
            next(self._parser)
        except StopIteration:
            pass
        except ProtocolError as exc:
            self._fail(CloseCode.PROTOCOL_ERROR, str(exc))
        except UnicodeDecodeError as exc:
            self._fail(CloseCode.INVALID_DATA, f"invalid UTF-8: {exc.reason} at byte {exc.start}")
        except PayloadTooBig as exc:
            size = self._message_size + (getattr(exc, "size", None) or 0)
            self._fail(
                CloseCode.MESSAGE_TOO_BIG,
                f"message is at least {size:,} bytes; the limit is {self._max_message_size:,}",
            )
        except EOFError:
            # The stream ended inside a frame.
            self._finished = True
            self._events.append(ConnectionLost())
        events, self._events = self._events, []
        return events

    def _fail(self, code: int, reason: str) -> None:
        self._finished = True
        self._drop_message()
        self._events.append(ProtocolFailure(code, _fit_reason(reason)))

    def _drop_message(self) -> None:
        self._message_opcode = None
        self._message_size = 0
        self._text_parts = []
        self._binary_parts = []
        self._decoder = None

    def _parse(self) -> Generator[None, None, None]:
        """Parse frames until Close or EOF; exceptions end the stream (see `receive`)."""
        reader = self._reader
        while True:
            self._at_boundary = True
            at_eof = yield from reader.at_eof()
            self._at_boundary = False
            if at_eof:
                self._finished = True
                self._events.append(ConnectionLost())
                return
            # The opcode is in the first byte, already buffered: a control
            # frame's header claiming over 125 bytes is a protocol error
            # (1002), not an oversized message (1009), and is refused from
            # the header alone.
            is_control = reader.buffer[0] & 0x08
            if is_control:
                limit = _MAX_CONTROL_PAYLOAD
            else:
                limit = max(self._max_message_size - self._message_size, _MAX_CONTROL_PAYLOAD)
            try:
                frame = yield from Frame.parse(reader.read_exact, mask=True, max_size=limit)
            except PayloadTooBig:
                if is_control:
                    raise ProtocolError("control frame too long") from None
                raise
            if self._handle(frame):
                # RFC 6455 section 1.4: discard whatever follows a Close.
                self._at_boundary = True
                return

    def _handle(self, frame: Frame) -> bool:
        """Turn one frame into events; return True when it was a Close."""
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if self._message_opcode is not None:
                raise ProtocolError("expected a continuation frame")
            if frame.fin:
                # The common case: one frame, one message, no bookkeeping.
                if opcode is Opcode.TEXT:
                    self._events.append(TextMessage(bytes(frame.data).decode("utf-8")))
                else:
                    self._events.append(BinaryMessage(bytes(frame.data)))
                return False
            self._message_opcode = opcode
            if opcode is Opcode.TEXT:
                self._decoder = codecs.getincrementaldecoder("utf-8")()
            self._append(frame)
        elif opcode is Opcode.CONT:
            if self._message_opcode is None:
                raise ProtocolError("unexpected continuation frame")
            self._append(frame)
        elif opcode is Opcode.PING:
            self._events.append(Ping(bytes(frame.data)))
        elif opcode is Opcode.PONG:
            self._events.append(Pong(bytes(frame.data)))
        else:  # Opcode.CLOSE; Frame.parse rejects unknown opcodes
            close = Close.parse(frame.data)  # checks the code and the reason's UTF-8
            # A Close may interrupt a fragmented message (it is a control
            # frame); the unfinished message is dropped.
            self._drop_message()
            self._close_received = True
            self._finished = True
            self._events.append(CloseReceived(int(close.code), close.reason))
            return True
        return False

    def _append(self, frame: Frame) -> None:
        self._message_size += len(frame.data)
        if self._decoder is not None:
            # Decoding fragment by fragment fails fast on invalid UTF-8
            # instead of buffering the rest of a bad message.
            self._text_parts.append(self._decoder.decode(frame.data, frame.fin))
        else:
            self._binary_parts.append(bytes(frame.data))
        if not frame.fin:
            return
        if self._decoder is not None:
            self._events.append(TextMessage("".join(self._text_parts)))
        else:
            self._events.append(BinaryMessage(b"".join(self._binary_parts)))
        self._drop_message()

    # -- sending ------------------------------------------------------------

    def _check_open(self) -> None:
        if self._close_sent:
            raise trio.ClosedResourceError("a Close frame was already sent on this WebSocket")

    def send_text(self, data: str) -> bytes:
        """Return a text frame carrying ``data``.

        Raises:
            trio.ClosedResourceError: A Close frame was already sent.
        """
        self._check_open()
        return serialize_message(data)

    def send_binary(self, data: bytes) -> bytes:
        """Return a binary frame carrying ``data``.

        Raises:
            trio.ClosedResourceError: A Close frame was already sent.
        """
        self._check_open()
        return serialize_message(bytes(data))

    def send_ping(self, payload: bytes = b"") -> bytes:
        """Return a Ping frame (allowed while closing, per RFC 6455 section 5.5).

        Raises:
            LimitExceededError: ``payload`` is over 125 bytes.
        """
        return _control_frame(Opcode.PING, payload)

    def send_pong(self, payload: bytes = b"") -> bytes:
        """Return a Pong frame, typically echoing a `Ping` payload.

        Raises:
            LimitExceededError: ``payload`` is over 125 bytes.
        """
        return _control_frame(Opcode.PONG, payload)

    def send_close(self, code: int = CloseCode.NORMAL, reason: str = "") -> bytes:
        """Return a Close frame and mark the Close as sent.

        Args:
            code: See `validate_close`.
            reason: At most 123 UTF-8 bytes.

        Raises:
            ValueError: The code or reason is not allowed (nothing is marked).
            trio.ClosedResourceError: A Close frame was already sent.
        """
        self._check_open()
        frame = serialize_close(code, reason)
        self._close_sent = True
        return frame
