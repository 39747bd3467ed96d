"""The worker and object the gateway tests serve."""

from __future__ import annotations

from typing import Any

import attrs

import trio_durable as td

#: websocket_close calls seen by Room objects: (name, code, reason, was_clean).
closes: list[tuple[str | None, int, str, bool]] = []


@attrs.define(eq=False)
class Room(td.DurableObject):
    """Echoes every message to every socket of the room; says "welcome" first."""

    async def fetch(self, request: td.Request) -> td.Response:
        if request.query.get("fail") == "1":
            raise RuntimeError("the room refuses")
        client, server = td.WebSocketPair()
        self.ctx.accept_websocket(server, tags=["room"])
        # Sent before the 101 is even written: must arrive right after it.
        await server.send("welcome")
        headers: dict[str, str] = {}
        offered = request.headers.get("sec-websocket-protocol")
        if offered:
            headers["sec-websocket-protocol"] = offered.split(",")[0].strip()
        return td.Response.websocket(client, headers=headers)

    async def websocket_message(self, ws: td.WebSocket, message: str | bytes) -> None:
        if message == "close me":
            await ws.close(4000, "as you wish")
            return
        for peer in self.ctx.get_websockets("room"):
            await peer.send(message)

    async def websocket_close(self, ws: Any, code: int, reason: str, was_clean: bool) -> None:
        closes.append((self.ctx.id.name, code, reason, was_clean))


async def worker(request: td.Request, runtime: td.Runtime) -> td.Response:
    path = request.path
    if path == "/hello":
        return td.Response.text(f"hello {request.query.get('name', 'nobody')}")
    if path == "/echo":
        return td.Response(
            status=200,
            headers=[("x-method", request.method), ("x-client-host", request.client[0])],
            body=request.body,
        )
    if path == "/url":
        return td.Response.text(request.url)
    if path == "/boom":
        raise RuntimeError("the worker broke")
    if path == "/not-a-response":
        return "not a response"  # type: ignore[return-value]
    if path == "/fake-101":
        return td.Response(status=101)  # no WebSocketPair behind it
    if path.startswith("/rooms/"):
        return await runtime.namespace("rooms").get_by_name(path.split("/")[2]).fetch(request)
    return td.Response.text("no such page", status=404)
