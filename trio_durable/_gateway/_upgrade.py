"""WebSocket upgrades: the checks before the worker, and the hand-over after it.

An upgrade request is checked (HTTP version, ``Sec-WebSocket-Version``,
key, origin, then the ``authenticate`` hook) *before* the worker runs, so a
refused upgrade never reaches an object. When the worker answers
``Response.websocket(client)``, :meth:`Upgrades.hand_over` writes no
response itself: it checks and encodes the 101 head, binds the client end
of the pair to a :class:`~trio_durable._websocket._network.NetworkTransport`,
and gives that the 101 and the bytes read past the request. From then on
the connection belongs to the runtime's connection nursery (where its
reader and writer run when needed) and to the shared socket parking (while
idle), so stopping ``serve()`` does not close open WebSockets; closing the
runtime does.

Whatever goes wrong before the transport starts, the pair is abandoned
(the object does not keep a socket that no connection serves) and the
client gets 500 (503, which invites a retry, while the runtime shuts down
or when the object was reset or evicted before the handshake ended).
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Final, Protocol

import h11
import trio

from .._http import Request, Response
from .._websocket._frames import accept_key
from .._websocket._home import ConnectionHome
from .._websocket._hub import SocketHub
from .._websocket._network import NetworkTransport
from .._websocket._socket import ServerEndDroppedError, abandon_pair, bind_client_end
from ._http1 import InvalidResponseError, error_response, header_fields
from ._options import ServeOptions
from ._wire import Wire

__all__ = ["ServedRuntime", "Upgrades", "check_upgrade"]

logger: Final = logging.getLogger("trio_durable.gateway")

# Headers of the 101 response that the gateway writes itself.
_OWN_HEADERS: Final = frozenset(
    {"upgrade", "connection", "sec-websocket-accept", "content-length", "transfer-encoding"}
)


class ServedRuntime(Protocol):
    """What the gateway needs from the runtime it serves: its socket hub."""

    @property
    def sockets(self) -> SocketHub:
        """Where upgraded WebSockets live."""


async def check_upgrade(
    request: Request, http_version: bytes, options: ServeOptions
) -> Response | None:
    """Refuse a bad or unwelcome upgrade before the worker (and any object) sees it.

    Returns:
        ``None`` to let it through, or the response that refuses it.
    """
    if http_version == b"1.0":
        # RFC 6455 section 4.1: the opening handshake needs HTTP/1.1.
        return error_response(400, "a WebSocket upgrade needs HTTP/1.1, not HTTP/1.0")
    version = request.headers.get("sec-websocket-version", "").strip()
    if version != "13":
        return Response.text(
            f"unsupported Sec-WebSocket-Version {version!r}; this server speaks 13\n",
            status=426,
            headers={"sec-websocket-version": "13"},
        )
    key = request.headers.get("sec-websocket-key", "").strip()
    if not _is_valid_key(key):
        return error_response(400, "missing or invalid Sec-WebSocket-Key")
    if options.allowed_origins is not None:
        origins = request.headers.get_all("origin")
        origin = origins[0] if len(origins) == 1 else None
        if len(origins) > 1 or origin not in options.allowed_origins:
            shown = "no Origin header" if not origins else f"origin {', '.join(origins)!r}"
            logger.info("refused a WebSocket upgrade from %s for %s", shown, request.url)
            return error_response(403, f"{shown} is not allowed")
    if options.authenticate is None:
        return None
    try:
        refusal = await options.authenticate(request)
    except Exception:
        logger.exception("authenticate failed on the upgrade for %s", request.url)
        return error_response(500)
    if refusal is None:
        return None
    if not isinstance(refusal, Response) or refusal.status == 101:
        logger.error(
            "authenticate must return None or a non-101 trio_durable.Response, got %r for %s",
            refusal,
            request.url,
        )
        return error_response(500)
    return refusal


def _is_valid_key(key: str) -> bool:
    # RFC 6455 section 4.1: base64 of 16 random bytes.
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


class Upgrades:
    """Hands upgraded connections of one ``serve()`` call to WebSocket transports.

    Args:
        runtime: The runtime whose connection nursery and parking the
            connections join.
        options: The checked options of the ``serve()`` call.
    """

    def __init__(self, runtime: ServedRuntime, options: ServeOptions) -> None:
        self._runtime = runtime
        self._options = options
        self._home: ConnectionHome | None = None

    @property
    def write_timeout(self) -> float:
        """The ``write_timeout`` of the ``serve()`` call."""
        return self._options.write_timeout

    def __len__(self) -> int:
        """Upgraded connections still open."""
        return len(self._home) if self._home is not None else 0

    def connection_home(self) -> ConnectionHome:
        """The shared home of upgraded connections, made on the first upgrade.

        Raises:
            trio.ClosedResourceError: The runtime's connection nursery is gone.
        """
        home = self._home
        if home is None:
            options = self._options
            hub = self._runtime.sockets
            nursery = hub.connection_nursery
            home = ConnectionHome(
                nursery,
                hub.parking,
                park_after=options.park_after,
                send_buffer_limit=options.send_buffer_limit,
                max_message_size=options.max_message_size,
                close_timeout=options.close_timeout,
                frame_timeout=options.frame_timeout,
                max_messages_per_second=options.max_messages_per_second,
            )
            nursery.start_soon(home.run)
            hub.connection_homes.append(home)
            self._home = home
        return home

    def hand_over(
        self,
        wire: Wire,
        conn: h11.Connection,
        request: Request,
        response: Response,
        *,
        trailing: bytes | None = None,
    ) -> Response | None:
        """Complete the handshake of a 101 ``response``; never blocks.

        ``trailing`` is what the client sent past the request head, when it
        was read elsewhere (a connection handed over by another process);
        otherwise ``conn`` has it.

        Returns:
            ``None`` once the socket belongs to a WebSocket transport (the
            101 is on its way), or the error response to send instead; the
            pair was then abandoned.
        """
        client = response.web_socket
        if not request.is_websocket_upgrade:
            logger.error(
                "worker returned 101 for %s %s, which is not a WebSocket upgrade request",
                request.method,
                request.url,
            )
            abandon_pair(client)
            return error_response(500)
        try:
            switch, protocol = self._switching_protocols(request, response)
            home = self.connection_home()
        except InvalidResponseError as exc:
            logger.error("worker returned an invalid 101 for %s: %s", request.url, exc)
            abandon_pair(client)
            return error_response(500)
        except trio.ClosedResourceError:
            abandon_pair(client)
            return error_response(503, "the runtime is shutting down")
        transport = NetworkTransport(wire.sock, home, tls=wire.tls)
        url = "ws" + request.url[4:] if request.url.startswith("http") else request.url
        try:
            sink = bind_client_end(client, transport, url=url, protocol=protocol)
        except ServerEndDroppedError as exc:
            # The object was reset or evicted meanwhile: a retry may succeed.
            logger.warning("WebSocket upgrade for %s: %s", request.url, exc)
            abandon_pair(client)
            return Response.text(
                "the object was reset; retry shortly\n", status=503, headers={"retry-after": "1"}
            )
        except (TypeError, RuntimeError) as exc:
            logger.error("cannot complete the WebSocket upgrade for %s: %s", request.url, exc)
            abandon_pair(client)
            return error_response(500)
        try:
            preamble = conn.send(switch) or b""
            if trailing is None:
                trailing = bytes(conn.trailing_data[0])
            # The transport writes the 101 itself, ahead of anything the object
            # already sent, so the hand-over needs no await and loses no message.
            transport.start(sink, initial=trailing, preamble=preamble)
        except Exception:
            transport.abort()  # it owns the socket now: close it, tell nobody twice
            raise
        return None

    @staticmethod
    def _switching_protocols(
        request: Request, response: Response
    ) -> tuple[h11.InformationalResponse, str | None]:
        """The 101 head, checked before anything is bound or sent, and its subprotocol.

        Raises:
            InvalidResponseError: A header cannot be sent.
        """
        # check_upgrade() has validated the key before the worker ran.
        key = request.headers.get("sec-websocket-key", "").strip()
        own = header_fields(response.headers, drop=_OWN_HEADERS)
        fields = [
            (b"upgrade", b"websocket"),
            (b"connection", b"Upgrade"),
            (b"sec-websocket-accept", accept_key(key).encode("ascii")),
            *own,
        ]
        try:
            switch = h11.InformationalResponse(
                status_code=101, headers=fields, reason=b"Switching Protocols"
            )
        except h11.LocalProtocolError as exc:
            raise InvalidResponseError(f"invalid 101 head: {exc}") from None
        protocols = [value for name, value in own if name.lower() == b"sec-websocket-protocol"]
        protocol = b", ".join(protocols).decode("latin-1") if protocols else None
        return switch, protocol
