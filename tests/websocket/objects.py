"""Objects used by the WebSocket tests."""

from __future__ import annotations

from typing import Any

import attrs
import trio

import trio_durable as td

constructed: dict[str, int] = {}
events: list[tuple[Any, ...]] = []


@attrs.define
class Member:
    name: str
    joined_round: int = 0


@attrs.define(eq=False)
class Room(td.DurableObject):
    """Echo/broadcast room with hibernatable sockets."""

    seen: int = 0

    def __attrs_post_init__(self) -> None:
        constructed["Room"] = constructed.get("Room", 0) + 1

    async def fetch(self, request: td.Request) -> td.Response:
        client, server = td.WebSocketPair()
        tags = request.query.get("tags", "room").split(",")
        self.ctx.accept_websocket(server, tags=tags)
        name = request.query.get("name")
        if name is not None:
            server.serialize_attachment(Member(name=name))
        return td.Response.websocket(client)

    async def websocket_message(self, ws: td.WebSocket, message: str | bytes) -> None:
        self.seen += 1
        if message == "whoami":
            member = ws.deserialize_attachment(Member)
            await ws.send(f"{member.name} seen={self.seen} tags={self.ctx.get_tags(ws)}")
        elif message == "broadcast":
            for peer in self.ctx.get_websockets("room"):
                await peer.send("hello room")
        elif isinstance(message, str) and message.startswith("sleep "):
            await trio.sleep(float(message.split()[1]))
            await ws.send("woke")
        elif isinstance(message, str) and message.startswith("close "):
            _, code, reason = message.split(" ", 2)
            await ws.close(int(code), reason)
        elif message == "burst":
            for n in range(100):
                await ws.send(f"burst {n}")
        elif message == "abort":
            self.ctx.abort("asked to")
        else:
            await ws.send(message)  # echo, text or binary

    async def websocket_close(
        self, ws: td.WebSocket, code: int, reason: str, was_clean: bool
    ) -> None:
        events.append(("close", code, reason, was_clean))
        await ws.close(1000, "closing too")  # calling close() here must be fine

    async def websocket_error(self, ws: td.WebSocket, error: BaseException) -> None:
        events.append(("error", repr(error)))

    async def accept_standard(self) -> None:
        raise NotImplementedError

    async def set_auto(self, request: str | None, response: str = "") -> None:
        pair = None if request is None else td.WebSocketRequestResponsePair(request, response)
        self.ctx.set_websocket_auto_response(pair)

    async def auto_info(self) -> tuple[Any, list[float | None]]:
        stamps = [
            self.ctx.get_websocket_auto_response_timestamp(ws) for ws in self.ctx.get_websockets()
        ]
        return self.ctx.get_websocket_auto_response(), stamps

    async def set_timeout(self, seconds: float | None) -> float | None:
        self.ctx.set_hibernatable_websocket_event_timeout(seconds)
        return self.ctx.get_hibernatable_websocket_event_timeout()

    async def count(self, tag: str | None = None) -> int:
        return len(self.ctx.get_websockets(tag))

    async def send_all(self, text: str) -> None:
        for ws in self.ctx.get_websockets():
            await ws.send(text)


@attrs.define(eq=False)
class Standard(td.DurableObject):
    """Uses the standard API: server.accept() and async for, in wait_until."""

    received: list[str] = attrs.field(factory=list)

    def __attrs_post_init__(self) -> None:
        constructed["Standard"] = constructed.get("Standard", 0) + 1

    async def fetch(self, request: td.Request) -> td.Response:
        client, server = td.WebSocketPair()
        server.accept()

        async def serve() -> None:
            async for message in server:
                self.received.append(str(message))
                await server.send(f"got {message}")

        self.ctx.wait_until(serve)
        return td.Response.websocket(client)

    async def log(self) -> list[str]:
        return list(self.received)


class FetchFailed(Exception):
    """What a careless ``fetch`` raises after accepting a socket."""


@attrs.define(eq=False)
class Careless(td.DurableObject):
    """Accepts a socket in ``fetch``, then ends it as ``?then=`` says.

    ``raise``: raises; ``text``: answers 200 without the socket; ``other``:
    accepts a second socket and returns that one; anything else: sends
    "welcome" first, then returns the socket (the legitimate case). The
    server ends stay in memory, so a later call can try to use them.
    """

    kept: list[td.WebSocket] = attrs.field(factory=list)

    async def fetch(self, request: td.Request) -> td.Response:
        client, server = td.WebSocketPair()
        if request.query.get("standard"):
            server.accept()
        else:
            self.ctx.accept_websocket(server, tags=["all"])
        self.kept.append(server)
        then = request.query.get("then")
        if then == "raise":
            raise FetchFailed("fetch failed after accepting a WebSocket")
        if then == "text":
            return td.Response.text("no WebSocket after all")
        if then == "other":
            other_client, other_server = td.WebSocketPair()
            self.ctx.accept_websocket(other_server, tags=["all"])
            self.kept.append(other_server)
            return td.Response.websocket(other_client)
        await server.send("welcome")
        return td.Response.websocket(client)

    async def count(self) -> int:
        return len(self.ctx.get_websockets())

    async def send_to_kept(self) -> list[str]:
        """Send to every socket ever accepted: "sent" or the error's name, for each."""
        outcomes = []
        for ws in self.kept:
            try:
                await ws.send("hello?")
            except Exception as exc:
                outcomes.append(type(exc).__name__)
            else:
                outcomes.append("sent")
        return outcomes

    async def broadcast(self, text: str) -> int:
        """The chat example's loop: skips closed sockets only."""
        sent = 0
        for ws in self.ctx.get_websockets("all"):
            try:
                await ws.send(text)
            except trio.ClosedResourceError:
                continue
            sent += 1
        return sent


@attrs.define(eq=False)
class Proxy(td.DurableObject):
    """Forwards ``fetch`` to ``careless`` object ``target``; ``?drop=1`` discards its answer."""

    async def fetch(self, request: td.Request) -> td.Response:
        target = self.ctx.namespace("careless").get_by_name(request.query["target"])
        response = await target.fetch(request)
        if request.query.get("drop"):
            return td.Response.text("never mind", status=503)
        return response


@attrs.define(eq=False)
class AcceptsAPair(td.DurableObject):
    """A ``fetch`` that accepts a new pair's server end (hibernatable) and returns its client."""

    async def fetch(self, request: td.Request) -> td.Response:
        client, server = td.WebSocketPair()
        self.ctx.accept_websocket(server)
        return td.Response.websocket(client)


@attrs.define(eq=False)
class Ledger(AcceptsAPair):
    """``"write K"`` stores K and answers "stored K"; anything else is echoed, no write."""

    async def websocket_message(self, ws: td.WebSocket, message: str | bytes) -> None:
        if isinstance(message, str) and message.startswith("write "):
            key = message.split()[1]
            await self.ctx.storage.put(key, True)
            await ws.send(f"stored {key}")
        else:
            await ws.send(message)

    async def stored(self, key: str) -> bool:
        return bool(await self.ctx.storage.get(key))
