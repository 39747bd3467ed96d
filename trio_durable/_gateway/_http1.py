"""HTTP/1.1 with h11: reading a request, building a ``Request``, writing a ``Response``.

Reading is where a client can lie, so every check that refuses a request
lives here, and raises :class:`HttpError` with the status to answer:

==============================================  ======
a malformed head or body (h11 says so)          400
the head over ``max_header_bytes``              431
an HTTP major version other than 1              505
Content-Length and Transfer-Encoding together   400
Transfer-Encoding on HTTP/1.0                   400
a chunk size of 2**63 or more                   400
a body (or one chunk's size) over the limit     413
a target or Host header that is not an address  400 (see ``_address.py``)
==============================================  ======

Every such answer closes the connection: after a framing error nothing that
follows on the same connection can be trusted to be a new request (RFC 9112
section 6.1 and 6.3), so a pipelined, smuggled request is never answered.

Writing is where the app can be wrong: :func:`encode_response` checks the
status, every header and the body *before* it touches the h11 state, and
raises :class:`InvalidResponseError` instead, so that the gateway can still
answer 500 on the same connection.
"""

from __future__ import annotations

import http
import logging
from typing import Final

import h11
import trio

from .._http import Headers, Request, Response
from ._address import BadAddressError, request_url
from ._options import ServeOptions
from ._wire import Wire

__all__ = [
    "ChunkSizeWatch",
    "HttpError",
    "InvalidResponseError",
    "build_request",
    "check_head",
    "encode_error",
    "encode_response",
    "error_response",
    "header_fields",
    "read_request",
]

logger: Final = logging.getLogger("trio_durable.gateway")

# Headers the gateway writes itself: the framing of a response is ours.
_FRAMING_HEADERS: Final = frozenset({"content-length", "transfer-encoding"})
# With ``close``, the app's Connection header goes too: ours says close.
_HEADERS_REPLACED_ON_CLOSE: Final = _FRAMING_HEADERS | {"connection"}
# RFC 9112 section 7.1: a chunk size must not overflow the recipient's integers.
_MAX_CHUNK_SIZE: Final = 2**63 - 1
_HEX_DIGITS: Final = frozenset(b"0123456789abcdefABCDEF")


class HttpError(Exception):
    """A request the gateway refuses: answer ``status`` with ``message`` and close.

    Args:
        status: The HTTP status to answer (4xx or 5xx).
        message: Why, for the client (plain text) and the debug log.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class InvalidResponseError(ValueError):
    """The app returned a response that cannot be sent; the client gets 500."""


# ------------------------------------------------------------------ reading


async def read_request(
    wire: Wire, conn: h11.Connection, options: ServeOptions
) -> tuple[h11.Request, bytes] | None:
    """Read the next request head and its whole body.

    The head and the body each have ``handshake_timeout`` to arrive (which
    is also the idle time allowed between keep-alive requests).

    Returns:
        The head and the body, or ``None`` when the client closed between
        requests or was too slow (it is dropped without an answer).

    Raises:
        HttpError: The request is refused (see the module docstring).
        OSError, trio.BrokenResourceError: The connection failed.
    """
    with trio.move_on_after(options.handshake_timeout) as scope:
        try:
            event = await _next_event(wire, conn, None)
        except h11.RemoteProtocolError as exc:
            if exc.error_status_hint == 431:
                raise HttpError(
                    431, f"request head is over the limit of {options.max_header_bytes:,} bytes"
                ) from None
            raise HttpError(exc.error_status_hint, f"malformed HTTP request: {exc}") from None
    if scope.cancelled_caught:
        logger.debug("no complete request head within %g s; dropped", options.handshake_timeout)
        return None
    if not isinstance(event, h11.Request):
        return None  # the client closed (ConnectionClosed) between requests
    check_head(event, options)

    watch: ChunkSizeWatch | None = None
    if _is_chunked(event):
        watch = ChunkSizeWatch(options.max_body_bytes)
        # Body bytes that arrived with the head are still in h11's buffer.
        watch.feed(conn.trailing_data[0])
    body = bytearray()
    with trio.move_on_after(options.handshake_timeout) as scope:
        while True:
            try:
                part = await _next_event(wire, conn, watch)
            except h11.RemoteProtocolError as exc:
                raise HttpError(exc.error_status_hint, f"malformed body: {exc}") from None
            if isinstance(part, h11.Data):
                body += part.data
                if len(body) > options.max_body_bytes:
                    raise HttpError(
                        413, f"body is over the limit of {options.max_body_bytes:,} bytes"
                    )
            elif isinstance(part, h11.EndOfMessage):
                break
            else:
                return None  # ConnectionClosed in the middle of the body
    if scope.cancelled_caught:
        logger.debug("request body not complete within %g s; dropped", options.handshake_timeout)
        return None
    return event, bytes(body)


async def _next_event(wire: Wire, conn: h11.Connection, watch: ChunkSizeWatch | None) -> object:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        if conn.they_are_waiting_for_100_continue:
            await wire.send_all(
                conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b""
            )
        data = await wire.receive_some()
        if watch is not None:
            watch.feed(data)
        conn.receive_data(data)


def check_head(event: h11.Request, options: ServeOptions) -> None:
    """Refuse a request head that must not be served, before its body is read.

    Raises:
        HttpError: 505 for an HTTP major version other than 1; 431 for a
            head over ``max_header_bytes``; 400 for ambiguous framing
            (Content-Length with Transfer-Encoding, or Transfer-Encoding on
            HTTP/1.0); 413 for a Content-Length over ``max_body_bytes``.
    """
    version = event.http_version
    if not version.startswith(b"1."):
        # RFC 9110 section 6.2: a higher minor version (1.2) is served as 1.1.
        raise HttpError(
            505, f"HTTP/{version.decode('ascii')} is not supported; this server speaks HTTP/1.1"
        )
    # h11 only limits a head that is still incomplete; one that arrived
    # whole in a single read is measured here.
    size = len(event.method) + len(event.target) + 12
    size += sum(len(name) + len(value) + 4 for name, value in event.headers.raw_items())
    if size > options.max_header_bytes:
        raise HttpError(
            431, f"request head is {size:,} bytes; the limit is {options.max_header_bytes:,}"
        )
    length: int | None = None
    has_transfer_encoding = False
    for name, value in event.headers:
        if name == b"content-length":
            length = int(value)  # h11 has checked it is one valid number
        elif name == b"transfer-encoding":
            has_transfer_encoding = True
    if has_transfer_encoding and length is not None:
        # RFC 9112 section 6.1: a sign of request smuggling; refuse and close.
        raise HttpError(400, "a request may not have both Content-Length and Transfer-Encoding")
    if has_transfer_encoding and version == b"1.0":
        raise HttpError(400, "HTTP/1.0 requests may not use Transfer-Encoding")
    if length is not None and length > options.max_body_bytes:
        raise HttpError(413, f"body is {length:,} bytes; the limit is {options.max_body_bytes:,}")


def _is_chunked(event: h11.Request) -> bool:
    # h11 refuses any Transfer-Encoding but "chunked" (501).
    return any(name == b"transfer-encoding" for name, _ in event.headers)


class ChunkSizeWatch:
    """Reads the chunk sizes of a chunked body as the bytes stream in.

    h11 parses a chunk-size line and then waits for that many bytes, however
    many that is, without telling; and it waits for a CRLF to end a size line
    for as long as the client likes. A client that declares a huge chunk, or
    ends its lines with a bare LF, and sends nothing more would hold the
    connection until the timeout. This follows the same bytes (sizes,
    extensions, data, CRLFs; it stops at the last chunk) and refuses at once:
    a size whose digits so far already make it too large (more digits only
    make it larger), a size of more than 20 digits (h11 refuses those once
    their line ends), and a size line that ends in a bare LF (h11 never sees
    such a line end). It never refuses what h11 would accept within the
    limits, and leaves every other syntax error to h11.

    Args:
        limit: ``max_body_bytes``: the total of all chunk sizes may not exceed it.
    """

    __slots__ = ("_declared", "_digits", "_last", "_left", "_limit", "_state")

    _SIZE, _LINE, _DATA, _DONE = range(4)

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._state = self._SIZE
        self._digits = bytearray()
        self._left = 0  # bytes of chunk data (and its CRLF) still to skip
        self._declared = 0  # sum of the chunk sizes seen so far
        self._last = 0  # the last byte of the size line seen so far (for its CR)

    def feed(self, data: bytes) -> None:
        """Follow ``data``, the next bytes of the body.

        Raises:
            HttpError: 400 for a chunk size of 2**63 or more, of more than 20
                digits, or a size line ending in a bare LF; 413 when the chunk
                sizes add up to more than the limit.
        """
        i, end = 0, len(data)
        while i < end:
            if self._state == self._SIZE:
                start = i
                while i < end and data[i] in _HEX_DIGITS:
                    i += 1
                if i > start:
                    self._digits += data[start:i]
                    self._check_size(int(self._digits, 16))
                if i < end:
                    self._end_of_size()
            elif self._state == self._LINE:
                newline = data.find(b"\n", i)
                if newline < 0:
                    self._last = data[end - 1]
                    return
                before = data[newline - 1] if newline > i else self._last
                if before != 0x0D:  # CR
                    raise HttpError(400, "a chunk-size line must end in CRLF, not a bare LF")
                i = newline + 1
                self._state = self._DATA if self._left else self._DONE
            elif self._state == self._DATA:
                taken = min(self._left, end - i)
                self._left -= taken
                i += taken
                if not self._left:
                    self._state = self._SIZE
            else:
                return

    def _check_size(self, size: int) -> None:
        """Refuse a chunk size (or what its digits so far already make it)."""
        if len(self._digits) > 20:
            shown = self._digits[:24].decode("ascii")
            raise HttpError(400, f"chunk size {shown}... has more than 20 digits")
        if size > _MAX_CHUNK_SIZE:
            raise HttpError(400, f"chunk size {size:#x} is not a usable number of bytes")
        declared = self._declared + size
        if declared > self._limit:
            raise HttpError(
                413,
                f"body is at least {declared:,} bytes (from its chunk sizes); "
                f"the limit is {self._limit:,}",
            )

    def _end_of_size(self) -> None:
        if not self._digits:  # not a chunk size at all: h11 answers that
            self._state = self._DONE
            return
        size = int(self._digits, 16)
        self._check_size(size)
        self._digits.clear()
        self._declared += size
        self._left = size + 2 if size else 0  # the data and its CRLF
        self._last = 0
        self._state = self._LINE


def build_request(
    event: h11.Request, body: bytes, *, peer: tuple[str, int], scheme: str, server_address: str
) -> Request:
    """The :class:`Request` a worker sees.

    Raises:
        HttpError: 400 when the target or the Host header is not an address.
    """
    headers = [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in event.headers.raw_items()
    ]
    host = None
    for name, value in event.headers:
        if name == b"host":
            host = value.decode("latin-1")  # h11 refuses two Host headers
    try:
        url = request_url(
            event.target.decode("ascii"), host, scheme=scheme, server_address=server_address
        )
    except BadAddressError as exc:
        raise HttpError(400, str(exc)) from None
    return Request(
        method=event.method.decode("ascii"), url=url, headers=headers, body=body, client=peer
    )


# ------------------------------------------------------------------ writing


def header_fields(headers: object, *, drop: frozenset[str]) -> list[tuple[bytes, bytes]]:
    """An app's response headers as h11 fields (Latin-1), leaving out ``drop``.

    Raises:
        InvalidResponseError: ``headers`` is not a list of ``(str, str)``
            pairs, or a name or value is not Latin-1.
    """
    if not isinstance(headers, Headers):
        try:
            headers = Headers(headers)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise InvalidResponseError(
                f"headers must be a Headers, a mapping or (str, str) pairs, got {headers!r}"
            ) from None
    fields = []
    for name, value in headers.items_raw():
        if name.lower() in drop:
            continue
        try:
            raw_name = name.encode("latin-1")
        except UnicodeEncodeError:
            raise InvalidResponseError(
                f"header name {name!r} is not Latin-1 (it must be an ASCII token)"
            ) from None
        try:
            # Surrounding whitespace is not part of a field value (RFC 9110 5.5).
            raw_value = value.strip(" \t").encode("latin-1")
        except UnicodeEncodeError:
            raise InvalidResponseError(
                f"the value of header {name!r} is not Latin-1, as HTTP/1.1 needs: {value!r}"
            ) from None
        fields.append((raw_name, raw_value))
    return fields


def encode_response(
    conn: h11.Connection, response: Response, *, method: str, close: bool = False
) -> bytes:
    """The bytes of ``response`` (status 200-599), after checking every part of it.

    With ``close``, the response says ``connection: close`` instead of any
    Connection header of the app's: two of them (``keep-alive`` and
    ``close``) would leave the client to guess which one holds.

    Raises:
        InvalidResponseError: The status, a header or the body cannot be
            sent; ``conn`` is untouched, so a 500 can still be sent on it.
    """
    status = response.status
    if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599:
        raise InvalidResponseError(f"status must be an int from 200 to 599, got {status!r}")
    status = int(status)
    body = response.body
    if not isinstance(body, bytes | bytearray | memoryview):
        raise InvalidResponseError(f"body must be bytes, got {type(body).__name__}")
    dropped = _HEADERS_REPLACED_ON_CLOSE if close else _FRAMING_HEADERS
    fields = header_fields(response.headers, drop=dropped)
    if close:
        fields.append((b"connection", b"close"))
    has_body = status not in (204, 304)
    if has_body:
        fields.append((b"content-length", b"%d" % len(body)))
    try:
        head = h11.Response(status_code=status, headers=fields, reason=_reason(status))
    except h11.LocalProtocolError as exc:
        raise InvalidResponseError(f"invalid response head: {exc}") from None
    data = conn.send(head) or b""
    if has_body and body and method != "HEAD":
        data += conn.send(h11.Data(data=bytes(body))) or b""
    data += conn.send(h11.EndOfMessage()) or b""
    return data


def encode_error(conn: h11.Connection, status: int, message: str) -> bytes:
    """The bytes of an error answer that closes the connection (``b""`` if none fits)."""
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return b""  # a response was already started: closing is all that is left
    response = error_response(status, message)
    fields = [*header_fields(response.headers, drop=frozenset()), (b"connection", b"close")]
    if status == 503:
        fields.append((b"retry-after", b"1"))  # a moment of unavailability: try again
    fields.append((b"content-length", b"%d" % len(response.body)))
    try:
        data = conn.send(h11.Response(status_code=status, headers=fields, reason=_reason(status)))
        data = (data or b"") + (conn.send(h11.Data(data=response.body)) or b"")
        return data + (conn.send(h11.EndOfMessage()) or b"")
    except h11.LocalProtocolError:
        return b""


def error_response(status: int, message: str | None = None) -> Response:
    """A plain-text error response (the reason phrase when there is no message)."""
    text = message if message is not None else _reason(status).decode("ascii")
    return Response.text(text + "\n", status=status)


def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""
