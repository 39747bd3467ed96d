"""The object and worker that the network fault tests serve."""

from __future__ import annotations

import contextlib
from typing import Any

import attrs
import trio

import trio_durable as td

#: What each Echo object saw, by object name: ("message", m), ("close", code,
#: reason, clean) or ("error", code).
seen: dict[str | None, list[tuple[Any, ...]]] = {}
#: Names of Echo objects in the order they were constructed.
built: list[str | None] = []

BIG_BODY = 16 * 1024 * 1024


def reset_records() -> None:
    seen.clear()
    built.clear()


@attrs.define(eq=False)
class Echo(td.DurableObject):
    """Echoes messages; ``"blast N"`` sends N KiB-sized messages to every socket."""

    def __attrs_post_init__(self) -> None:
        built.append(self.ctx.id.name)

    def _log(self, *event: Any) -> None:
        seen.setdefault(self.ctx.id.name, []).append(event)

    async def fetch(self, request: td.Request) -> td.Response:
        if request.query.get("careless") is None and not request.is_websocket_upgrade:
            return td.Response.text("this is a WebSocket endpoint", status=426)
        client, server = td.WebSocketPair()
        self.ctx.accept_websocket(server, tags=["all"])
        return td.Response.websocket(client)

    async def websocket_message(self, ws: td.WebSocket, message: str | bytes) -> None:
        self._log("message", message)
        if isinstance(message, str) and message.startswith("blast "):
            chunk = "x" * 1024
            for _ in range(int(message.split()[1])):
                for peer in self.ctx.get_websockets("all"):
                    with contextlib.suppress(trio.ClosedResourceError):  # dropped meanwhile
                        await peer.send(chunk)
            return
        await ws.send(message)

    async def websocket_close(self, ws: td.WebSocket, code: int, reason: str, clean: bool) -> None:
        self._log("close", code, reason, clean)

    async def websocket_error(self, ws: td.WebSocket, error: BaseException) -> None:
        self._log("error", getattr(error, "code", None))

    async def socket_count(self) -> int:
        return len(self.ctx.get_websockets())


OBJECTS: dict[str, type[td.DurableObject]] = {"echo": Echo}


async def worker(request: td.Request, runtime: td.Runtime) -> td.Response:
    path = request.path
    if path == "/hello":
        return td.Response.text("hello")
    if path == "/big":
        return td.Response(body=b"x" * BIG_BODY)
    if path == "/echo":
        return td.Response(body=request.body)
    if path.startswith("/rooms/"):
        return await runtime.namespace("echo").get_by_name(path.split("/")[2]).fetch(request)
    return td.Response.text("no such page", status=404)
