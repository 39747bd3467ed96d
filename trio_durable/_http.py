"""HTTP value types: :class:`Request`, :class:`Response` and :class:`Headers`.

They are plain values: the gateway builds a ``Request`` from the wire and
writes a ``Response`` back, and a stub call passes them through unchanged.
Nothing here does I/O.
"""

from __future__ import annotations

import json as _json
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final
from urllib.parse import parse_qsl

import attrs

from . import _codec

__all__ = ["Headers", "Request", "Response"]

# RFC 3986: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
_C0_OR_SPACE: Final = "".join(map(chr, range(0x21)))
_TAB_AND_NEWLINES: Final = str.maketrans("", "", "\t\r\n")


class Headers(Mapping[str, str]):
    """Case-insensitive HTTP headers that keep order and repeated fields.

    ``headers["Content-Type"]`` and ``headers["content-type"]`` are the same
    field. Looking up a repeated field joins its values with ``", "`` (as
    RFC 9110 allows); :meth:`get_all` returns them one by one.
    """

    __slots__ = ("_items",)

    def __init__(
        self,
        items: Headers | Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    ) -> None:
        pairs: Iterable[tuple[str, str]]
        if items is None:
            pairs = ()
        elif isinstance(items, Headers):
            pairs = items._items
        elif isinstance(items, Mapping):
            pairs = items.items()
        else:
            pairs = items
        self._items: list[tuple[str, str]] = []
        for name, value in pairs:
            if not isinstance(name, str) or not isinstance(value, str):
                raise TypeError(f"header names and values must be str, got {name!r}: {value!r}")
            self._items.append((name, value))

    def __getitem__(self, name: str) -> str:
        values = self.get_all(name)
        if not values:
            raise KeyError(name)
        return ", ".join(values)

    def get_all(self, name: str) -> list[str]:
        """Every value of the field ``name``, in order (empty if absent)."""
        wanted = name.lower()
        return [value for key, value in self._items if key.lower() == wanted]

    def __iter__(self) -> Iterator[str]:
        seen: set[str] = set()
        for key, _ in self._items:
            lowered = key.lower()
            if lowered not in seen:
                seen.add(lowered)
                yield lowered

    def __len__(self) -> int:
        return len({key.lower() for key, _ in self._items})

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        wanted = name.lower()
        return any(key.lower() == wanted for key, _ in self._items)

    def items_raw(self) -> list[tuple[str, str]]:
        """All fields as (name, value) pairs with their original spelling."""
        return list(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return [(k.lower(), v) for k, v in self._items] == [
                (k.lower(), v) for k, v in other._items
            ]
        if isinstance(other, Mapping):
            return dict(self.items()) == {str(k).lower(): v for k, v in other.items()}
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable-looking mapping: not hashable

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


def _upper(value: object) -> str:
    return str(value).upper()


def _to_headers(value: Any) -> Headers:
    return value if isinstance(value, Headers) else Headers(value)


def _to_body(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"body must be bytes or str, got {type(value).__name__}")


@attrs.frozen
class Request:
    """An HTTP request, as a Worker's ``fetch`` sees it.

    Args:
        method: The HTTP method, upper case (``"GET"``).
        url: The absolute URL, e.g. ``"http://host/path?x=1"``.
        headers: Any mapping or list of pairs; stored as :class:`Headers`.
        body: The request body (``str`` is encoded as UTF-8).
        client: The TCP peer as ``(host, port)`` when the request came from
            the gateway, ``None`` when it was built in code.
    """

    method: str = attrs.field(default="GET", converter=_upper)
    url: str = "http://localhost/"
    headers: Headers = attrs.field(factory=Headers, converter=_to_headers)
    body: bytes = attrs.field(default=b"", converter=_to_body)
    client: tuple[str, int] | None = None

    @property
    def path(self) -> str:
        """The URL path, without the query string (``"/"`` at least)."""
        return _target(self.url).partition("?")[0] or "/"

    @property
    def query(self) -> dict[str, str]:
        """Query parameters; when a name repeats, the first value wins."""
        result: dict[str, str] = {}
        query = _target(self.url).partition("?")[2]
        for name, value in parse_qsl(query, keep_blank_values=True):
            result.setdefault(name, value)
        return result

    def text(self) -> str:
        """The body decoded as UTF-8 (errors raise ``UnicodeDecodeError``)."""
        return self.body.decode("utf-8")

    def json(self) -> Any:
        """The body parsed as JSON (errors raise ``ValueError``)."""
        return _json.loads(self.body)

    @property
    def is_websocket_upgrade(self) -> bool:
        """True when this is a WebSocket opening handshake (RFC 6455 §4.1)."""
        upgrade = self.headers.get("upgrade", "")
        connection = self.headers.get("connection", "")
        return (
            self.method == "GET"
            and upgrade.strip().lower() == "websocket"
            and "upgrade" in [token.strip().lower() for token in connection.split(",")]
        )


def _target(url: str) -> str:
    """The path and query of ``url`` (no fragment), read without parsing its authority.

    ``urlsplit`` would also check the authority, and raise for one it does
    not know (an unusual IP literal): what a client chose as its Host must
    never make ``path`` or ``query`` fail. The split is urlsplit's own (a
    scheme up to the first ``:``, an authority after ``//`` up to the first
    ``/``, ``?`` or ``#``), without the checks.
    """
    # As urlsplit does: leading controls and spaces go, tabs and newlines too.
    url = url.lstrip(_C0_OR_SPACE).translate(_TAB_AND_NEWLINES).partition("#")[0]
    colon = url.find(":")
    if colon > 0 and _SCHEME.fullmatch(url, 0, colon):
        url = url[colon + 1 :]
    if url.startswith("//"):
        ends = [i for i in (url.find("/", 2), url.find("?", 2)) if i >= 0]
        url = url[min(ends) :] if ends else ""
    return url


def _check_status(instance: Response, attribute: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or not 100 <= value <= 599:
        raise ValueError(f"status must be an int from 100 to 599, got {value!r}")


@attrs.frozen
class Response:
    """An HTTP response returned by ``fetch``.

    Build one directly (``Response(status=204)``) or with :meth:`text`,
    :meth:`json` or :meth:`websocket`.
    """

    status: int = attrs.field(default=200, validator=_check_status)
    headers: Headers = attrs.field(factory=Headers, converter=_to_headers)
    body: bytes = attrs.field(default=b"", converter=_to_body)
    #: The client end of a WebSocketPair for a 101 response (``Response.websocket``).
    web_socket: Any = attrs.field(default=None, repr=False)

    @classmethod
    def text(cls, text: str, status: int = 200, headers: Any = None) -> Response:
        """A ``text/plain; charset=utf-8`` response."""
        merged = Headers(headers).items_raw() if headers is not None else []
        if not any(name.lower() == "content-type" for name, _ in merged):
            merged.append(("content-type", "text/plain; charset=utf-8"))
        return cls(status=status, headers=merged, body=text.encode("utf-8"))

    @classmethod
    def json(cls, value: Any, status: int = 200, headers: Any = None) -> Response:
        """An ``application/json`` response; ``value`` must be JSON-able."""
        merged = Headers(headers).items_raw() if headers is not None else []
        if not any(name.lower() == "content-type" for name, _ in merged):
            merged.append(("content-type", "application/json"))
        body = _json.dumps(value, separators=(",", ":")).encode("utf-8")
        return cls(status=status, headers=merged, body=body)

    @classmethod
    def websocket(cls, client: Any, headers: Any = None) -> Response:
        """A ``101 Switching Protocols`` response that hands ``client`` to the caller.

        ``client`` is the client end of a :class:`~trio_durable.WebSocketPair`.
        """
        return cls(status=101, headers=headers, web_socket=client)


# Requests and responses are values: an RPC copies them (as the same object,
# since nothing can change them) and a process boundary carries them, under
# names that never change.
_codec.register_value_type(
    Headers, name="td.Headers", to_data=Headers.items_raw, from_data=Headers, immutable=True
)
_codec.register_value_type(
    Request,
    name="td.Request",
    to_data=lambda r: (r.method, r.url, r.headers.items_raw(), r.body, r.client),
    from_data=lambda d: Request(
        method=d[0], url=d[1], headers=d[2], body=d[3], client=None if d[4] is None else tuple(d[4])
    ),
    immutable=True,
)
_codec.register_value_type(
    Response,
    name="td.Response",
    to_data=lambda r: (r.status, r.headers.items_raw(), r.body, r.web_socket),
    from_data=lambda d: Response(status=d[0], headers=d[1], body=d[2], web_socket=d[3]),
    immutable=True,
)
