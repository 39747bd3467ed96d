"""The edge-chat demo on trio_durable: rooms, a rate limiter, stored history.

A port of Cloudflare's "edge chat demo" (a ``ChatRoom`` Durable Object per
room, a ``RateLimiter`` per client IP) to trio_durable, using the WebSocket
Hibernation API: a room with nobody typing is evicted after 10 seconds while
its members stay connected, and the next message builds it again from its
sockets' attachments.

Routes (see :func:`worker`):

* ``GET /``: the chat page (plain HTML, CSS and JS from ``static/``).
* ``POST /api/room``: a new private room ID, as 64 hex characters.
* ``/api/room/<name>/websocket``: a WebSocket on the room ``<name>``; a
  64-hex name is a private room's ID, other names are public rooms of at
  most 32 characters.

Protocol, JSON over the socket:

* client → ``{"name": "ada"}`` first; then server → ``{"joined": n}`` for each
  member present, the last 100 messages, ``{"joined": "ada"}`` (broadcast to
  everyone, the newcomer included) and ``{"ready": true}``;
* client → ``{"message": "hi"}``; server → everyone
  ``{"name": "ada", "message": "hi", "timestamp": 1700000000000}``
  (milliseconds, strictly increasing within a room);
* a member leaves: everyone gets ``{"quit": "ada"}``;
* problems: ``{"error": "..."}`` (name over 32 characters: also closed with
  1009); a refused message (over 256 characters, rate limited) also gives
  its text back, ``{"error": "...", "refused": "hi"}``, so that the page can
  put it back in the input box.

Rate limits: each connection may send a burst of 5 messages, then one per
second (typing speed); each client IP a burst of 20, then two per second, so
that two tabs (or a household behind one address) chat normally while one
address still cannot flood a room. Cloudflare's demo limits only per IP, to
one message per 5 s after a burst of 4, which two local tabs hit within
seconds.

Run it with ``trio-durable serve examples.chat:app --port 8787``.
Configuration comes from the environment (see :class:`ChatConfig`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import mimetypes
import os
import re
from pathlib import Path
from typing import Any

import attrs
import trio

import trio_durable as td

__all__ = [
    "ChatConfig",
    "ChatRoom",
    "Member",
    "RateLimiter",
    "admit",
    "app",
    "make_app",
    "worker",
]

logger = logging.getLogger("examples.chat")

#: Messages a newcomer gets from the room's history.
HISTORY = 100
#: Longest name and message, in characters.
MAX_NAME = 32
MAX_MESSAGE = 256
#: Prefix of the history keys; the rest is the zero-padded millisecond timestamp.
MESSAGE_PREFIX = "msg:"

STATIC = Path(__file__).parent / "static"
_HEX_ID = re.compile(r"[0-9a-f]{64}")
_ROOM_ROUTE = re.compile(r"/api/room/([^/]+)/websocket")
# The header through which the worker tells a room its client's address.
_CLIENT_IP_HEADER = "x-chat-client-ip"

RATE_LIMITED = "Your IP is being rate-limited, please try again later."
TOO_FAST = "You are sending messages too fast; wait a moment."


@attrs.frozen
class ChatConfig:
    """Settings of the chat app; objects see them as ``self.env``.

    Attributes:
        rate_burst: Messages a client IP may send at once (all its
            connections together).
        rate_interval: Seconds per message of a client IP after its burst.
        session_burst: Messages one connection may send at once.
        session_interval: Seconds per message of a connection after its burst.
        trusted_proxies: TCP peers whose ``X-Forwarded-For`` header is
            believed (a reverse proxy in front of the server). From any
            other peer the header is ignored.
    """

    rate_burst: int = attrs.field(default=20, validator=attrs.validators.ge(1))
    rate_interval: float = attrs.field(default=0.5, validator=attrs.validators.gt(0))
    session_burst: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    session_interval: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    trusted_proxies: frozenset[str] = frozenset()

    @classmethod
    def from_environ(cls, environ: Any = None) -> ChatConfig:
        """Read ``CHAT_RATE_BURST``, ``CHAT_RATE_INTERVAL``, ``CHAT_SESSION_BURST``,
        ``CHAT_SESSION_INTERVAL`` and ``CHAT_TRUSTED_PROXIES``.

        ``CHAT_TRUSTED_PROXIES`` is a comma-separated list of IP addresses.
        """
        env = os.environ if environ is None else environ
        default = cls()
        proxies = env.get("CHAT_TRUSTED_PROXIES", "")
        return cls(
            rate_burst=int(env.get("CHAT_RATE_BURST", default.rate_burst)),
            rate_interval=float(env.get("CHAT_RATE_INTERVAL", default.rate_interval)),
            session_burst=int(env.get("CHAT_SESSION_BURST", default.session_burst)),
            session_interval=float(env.get("CHAT_SESSION_INTERVAL", default.session_interval)),
            trusted_proxies=frozenset(p.strip() for p in proxies.split(",") if p.strip()),
        )


def admit(next_free: float, now: float, burst: int, interval: float) -> tuple[float, float]:
    """One step of the limiter shared by IPs and connections: ``(wait, next_free)``.

    The state is one point in time, ``next_free``: a message is allowed
    while it is at most ``(burst - 1) * interval`` ahead of ``now``, and each
    allowed message pushes it one ``interval`` further. ``wait`` is 0.0 when
    the message is allowed (then ``next_free`` is the new state), else the
    seconds until it would be (and ``next_free`` is unchanged: a refusal
    spends nothing).
    """
    next_free = max(now, next_free)
    ahead = next_free - now
    allowance = (burst - 1) * interval
    if ahead > allowance:
        return ahead - allowance, next_free
    return 0.0, next_free + interval


# ------------------------------------------------------------- rate limiter


@attrs.define(eq=False)
class RateLimiter(td.DurableObject):
    """One per client IP (named by the address): a burst, then one message per interval.

    The state is a single point in time, ``next_free`` (trio's clock; see
    :func:`admit`). It lives in memory; a background wait keeps the object
    awake until ``next_free`` has passed, so hibernation never forgets a
    client that is still being limited.
    """

    next_free: float = 0.0
    holding: bool = False

    async def consume(self) -> float:
        """Spend one message. Returns 0.0 if allowed, else the seconds to wait."""
        config: ChatConfig = self.env
        wait, self.next_free = admit(
            self.next_free, trio.current_time(), config.rate_burst, config.rate_interval
        )
        if wait > 0:
            return wait
        if not self.holding:
            self.holding = True
            self.ctx.wait_until(self._hold)
        return 0.0

    async def _hold(self) -> None:
        # Keeps the object (and so its state) alive until it is worth nothing.
        try:
            while True:
                remaining = self.next_free - trio.current_time()
                if remaining <= 0:
                    break
                await trio.sleep(remaining)
        finally:
            self.holding = False


# ---------------------------------------------------------------- chat room


@attrs.define
class Member:
    """A socket's attachment: what the room must remember across hibernation.

    Attributes:
        limiter_id: The member's :class:`RateLimiter` ID (64 hex).
        name: The member's name once it joined; ``None`` before.
    """

    limiter_id: str
    name: str | None = None


@attrs.define(eq=False)
class ChatRoom(td.DurableObject):
    """One chat room: its members' sockets (hibernatable) and its stored history.

    In-memory fields are rebuilt when the room wakes: the session table
    from ``ctx.get_websockets()`` and the attachments, the last timestamp
    from storage on the first message.
    """

    sessions: dict[td.WebSocket, Member] = attrs.field(factory=dict)
    # Each connection's own limiter state (see admit). In memory: the room
    # hibernates only after 10 s without a message, by which time a default
    # burst (5 messages, 1 per second) has long come back, so losing the
    # state then forgets nothing that matters.
    session_next_free: dict[td.WebSocket, float] = attrs.field(factory=dict)
    last_timestamp: int | None = None
    # Joins, messages and departures run one at a time, so that a newcomer
    # never misses a message between its backlog and the first broadcast.
    lock: trio.Lock = attrs.field(factory=trio.Lock)

    def __attrs_post_init__(self) -> None:
        for ws in self.ctx.get_websockets():
            member = ws.deserialize_attachment(Member)
            if member is not None:
                self.sessions[ws] = member

    async def fetch(self, request: td.Request) -> td.Response:
        if not request.is_websocket_upgrade:
            return td.Response.text("expected a WebSocket upgrade\n", status=426)
        ip = request.headers.get(_CLIENT_IP_HEADER) or "unknown"
        limiter_id = self.ctx.namespace("limiters").id_from_name(ip)
        client, server = td.WebSocketPair()
        self.ctx.accept_websocket(server)
        member = Member(limiter_id=str(limiter_id))
        server.serialize_attachment(member)
        self.sessions[server] = member
        return td.Response.websocket(client)

    async def websocket_message(self, ws: td.WebSocket, message: str | bytes) -> None:
        member = self.sessions.get(ws)
        if member is None:
            member = ws.deserialize_attachment(Member)
            if member is None:  # not a socket of ours
                await ws.close(1011, "unknown session")
                return
            self.sessions[ws] = member
        try:
            data = json.loads(message)
            if not isinstance(data, dict):
                raise ValueError("not an object")
        except ValueError:
            await _send(ws, {"error": "Expected a JSON object."})
            return
        if member.name is None:
            await self._join(ws, member, data)
        else:
            await self._post(ws, member, data)

    async def _join(self, ws: td.WebSocket, member: Member, data: dict[str, Any]) -> None:
        name = str(data.get("name") or "anonymous")
        if len(name) > MAX_NAME:
            await _send(ws, {"error": "Name too long."})
            await ws.close(1009, "Name too long.")
            return
        async with self.lock:
            if ws not in self.sessions:
                return  # it left while waiting
            backlog = await self.ctx.storage.list(
                prefix=MESSAGE_PREFIX, reverse=True, limit=HISTORY
            )
            for other_ws, other in list(self.sessions.items()):
                if other.name is not None and other_ws is not ws:
                    await _send(ws, {"joined": other.name})
            for record in reversed(backlog.values()):
                await _send(ws, record)
            member.name = name
            ws.serialize_attachment(member)
            await self._broadcast({"joined": name})
            await _send(ws, {"ready": True})

    async def _post(self, ws: td.WebSocket, member: Member, data: dict[str, Any]) -> None:
        text = str(data.get("message", ""))
        if len(text) > MAX_MESSAGE:
            await _send(ws, {"error": "Message too long.", "refused": text})
            return
        # This connection's budget first, then its IP's: a refusal by either
        # spends nothing, so one tab sending too fast cannot use up its IP's
        # budget for the other tabs on that address.
        config: ChatConfig = self.env
        wait, session_next_free = admit(
            self.session_next_free.get(ws, 0.0),
            trio.current_time(),
            config.session_burst,
            config.session_interval,
        )
        if wait > 0:
            await _send(ws, {"error": TOO_FAST, "refused": text})
            return
        limiters = self.ctx.namespace("limiters")
        limiter = limiters.get(limiters.id_from_string(member.limiter_id))
        if await limiter.consume() > 0:
            await _send(ws, {"error": RATE_LIMITED, "refused": text})
            return
        if ws in self.sessions:  # (it may have left while the limiter answered)
            self.session_next_free[ws] = session_next_free
        async with self.lock:
            if ws not in self.sessions:
                return
            timestamp = await self._next_timestamp()
            record = {"name": member.name, "message": text, "timestamp": timestamp}
            await self.ctx.storage.put(f"{MESSAGE_PREFIX}{timestamp:016d}", record)
            await self._broadcast(record)

    async def _next_timestamp(self) -> int:
        last = self.last_timestamp
        if last is None:  # woken: continue after the newest stored message
            newest = await self.ctx.storage.list(prefix=MESSAGE_PREFIX, reverse=True, limit=1)
            last = max((int(key[len(MESSAGE_PREFIX) :]) for key in newest), default=0)
        # The runtime's clock, not time.time(): it follows Trio's clock, so tests
        # in virtual time see timestamps that move with it.
        timestamp = max(int(self.ctx.now() * 1000), last + 1)
        self.last_timestamp = timestamp
        return timestamp

    async def websocket_close(
        self, ws: td.WebSocket, code: int, reason: str, was_clean: bool
    ) -> None:
        await self._leave(ws)

    async def websocket_error(self, ws: td.WebSocket, error: BaseException) -> None:
        await self._leave(ws)

    async def _leave(self, ws: td.WebSocket) -> None:
        self.session_next_free.pop(ws, None)
        async with self.lock:
            member = self.sessions.pop(ws, None)
            if member is None:
                # Woken by this very close: the socket is no longer among
                # get_websockets(), but its attachment still names it.
                member = ws.deserialize_attachment(Member)
            if member is not None and member.name is not None:
                await self._broadcast({"quit": member.name})

    async def _broadcast(self, value: Any) -> None:
        """Send ``value`` to every member who joined (a newcomer gets the history instead).

        ``ctx.broadcast`` serializes it once and skips sockets that are gone;
        their ``websocket_close`` says goodbye for them.
        """
        joining = [ws for ws, member in self.sessions.items() if member.name is None]
        await self.ctx.broadcast(json.dumps(value), exclude=joining)


async def _send(ws: td.WebSocket, value: Any) -> None:
    with contextlib.suppress(trio.ClosedResourceError):  # leaving: websocket_close tidies up
        await ws.send(json.dumps(value))


# ------------------------------------------------------------------- worker


def client_ip(request: td.Request, trusted_proxies: frozenset[str]) -> str:
    """The client's address: the TCP peer, or what a trusted proxy says it is.

    Behind a trusted proxy the address is the rightmost ``X-Forwarded-For``
    entry that is not itself a trusted proxy (entries to its left can be
    forged by the client).
    """
    peer = request.client[0] if request.client is not None else "unknown"
    if peer not in trusted_proxies:
        return peer
    hops = [h.strip() for h in ",".join(request.headers.get_all("x-forwarded-for")).split(",")]
    for hop in reversed([h for h in hops if h]):
        if hop not in trusted_proxies:
            return hop
    return peer


def _static(name: str) -> td.Response:
    path = STATIC / name
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if content_type.startswith("text/") or content_type.endswith("javascript"):
        content_type += "; charset=utf-8"
    return td.Response(
        headers={"content-type": content_type, "cache-control": "no-cache"},
        body=path.read_bytes(),
    )


_STATIC_FILES = frozenset(p.name for p in STATIC.iterdir() if p.is_file())


async def worker(request: td.Request, runtime: td.Runtime) -> td.Response:
    """Route a request: the page, a new private room, or a room's WebSocket."""
    path = request.path
    if path == "/" and request.method in ("GET", "HEAD"):
        return _static("index.html")
    if path.startswith("/static/") and request.method in ("GET", "HEAD"):
        name = path[len("/static/") :]
        if name in _STATIC_FILES:
            return _static(name)
        return td.Response.text("Not found\n", status=404)
    if path == "/api/room":
        if request.method != "POST":
            return td.Response.text("Method not allowed\n", status=405, headers={"allow": "POST"})
        return td.Response.text(str(runtime.namespace("rooms").new_unique_id()))
    match = _ROOM_ROUTE.fullmatch(path)
    if match:
        return await _room(request, runtime, match.group(1))
    return td.Response.text("Not found\n", status=404)


async def _room(request: td.Request, runtime: td.Runtime, name: str) -> td.Response:
    rooms = runtime.namespace("rooms")
    if _HEX_ID.fullmatch(name):
        try:
            room_id = rooms.id_from_string(name)
        except ValueError:
            return td.Response.text("No such private room\n", status=404)
    elif len(name) > MAX_NAME:
        return td.Response.text("Room name too long\n", status=404)
    else:
        room_id = rooms.id_from_name(name)
    if not request.is_websocket_upgrade:
        return td.Response.text("Expected a WebSocket upgrade\n", status=426)
    config: ChatConfig = runtime.env
    ip = client_ip(request, config.trusted_proxies)
    headers = [
        (key, value)
        for key, value in request.headers.items_raw()
        if key.lower() != _CLIENT_IP_HEADER
    ]
    headers.append((_CLIENT_IP_HEADER, ip))
    return await rooms.get(room_id).fetch(attrs.evolve(request, headers=headers))


def make_app(config: ChatConfig | None = None) -> td.App:
    """The chat app with ``config`` (default: read from the environment)."""
    return td.App(
        worker=worker,
        objects={"rooms": ChatRoom, "limiters": RateLimiter},
        env=config if config is not None else ChatConfig.from_environ(),
    )


app = make_app()
