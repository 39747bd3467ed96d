"""The app the multi-process cluster tests serve (``tests.cluster.app:app``)."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import attrs
import trio

import trio_durable as td


@attrs.define(eq=False)
class Counter(td.DurableObject):
    hits: int = 0  # in memory: a second live instance would restart at 0

    async def fetch(self, request: td.Request) -> td.Response:
        if request.is_websocket_upgrade:
            client, server = td.WebSocketPair()
            self.ctx.accept_websocket(server, tags=["room"])
            return td.Response.websocket(client)
        if request.path.endswith("/set-alarm"):
            await self.ctx.storage.set_alarm(self.ctx.now() + float(request.query["in"]))
            return td.Response.json({"owner": os.getpid()})
        if request.path.endswith("/alarm"):
            return td.Response.json(
                {"owner": os.getpid(), "alarm": await self.ctx.storage.get("alarm")}
            )
        self.hits += 1
        stored = int(await self.ctx.storage.get("count") or 0) + 1
        await self.ctx.storage.put("count", stored)
        return td.Response.json({"hits": self.hits, "stored": stored, "owner": os.getpid()})

    async def alarm(self, info: td.AlarmInfo) -> None:
        await self.ctx.storage.put("alarm", {"fired_in": os.getpid(), "at": self.ctx.now()})

    async def websocket_message(self, ws: td.WebSocket, message: str | bytes) -> None:
        text = message if isinstance(message, str) else message.decode()
        sockets = self.ctx.get_websockets("room")
        for peer in sockets:
            await peer.send(
                json.dumps({"owner": os.getpid(), "sockets": len(sockets), "text": text})
            )


@attrs.define(eq=False)
class Ticker(td.DurableObject):
    """Writes a tick every 20 ms in the background once started: (writer pid, wall time)."""

    async def fetch(self, request: td.Request) -> td.Response:
        if request.path.endswith("/start"):
            self.ctx.wait_until(self._tick)
            return td.Response.json({"started": os.getpid()})
        ticks = await self.ctx.storage.list(prefix="t")
        return td.Response.json({"owner": os.getpid(), "ticks": list(ticks.values())})

    async def _tick(self) -> None:
        n = 0
        while True:
            n += 1
            await self.ctx.storage.put(f"t{os.getpid()}-{n:08d}", [os.getpid(), time.time()])
            await trio.sleep(0.02)


@attrs.define(eq=False)
class Echo(td.DurableObject):
    """Answers each message to its sender, with the sender's attachment and the owner's pid."""

    async def fetch(self, request: td.Request) -> td.Response:
        client, server = td.WebSocketPair()
        self.ctx.accept_websocket(server, tags=[request.query.get("who", "anon")])
        server.serialize_attachment({"who": request.query.get("who", "anon")})
        self.ctx.set_websocket_auto_response(td.WebSocketRequestResponsePair("ping", "pong"))
        return td.Response.websocket(client)

    async def websocket_message(self, ws: td.WebSocket, message: str | bytes) -> None:
        who = ws.deserialize_attachment()["who"]
        if message == "when?":
            await ws.send(json.dumps(self.ctx.get_websocket_auto_response_timestamp(ws)))
            return
        await ws.send(f"{who}:{self.ctx.get_tags(ws)[0]}:{os.getpid()}:{message}")


@attrs.define(eq=False)
class Ledger(td.DurableObject):
    """Entries in the object's SQL database: ``/ledger/NAME/add?amount=N`` and ``/ledger/NAME``."""

    def __attrs_post_init__(self) -> None:
        self.ctx.storage.sql.exec(
            "CREATE TABLE IF NOT EXISTS entries "
            "(id INTEGER PRIMARY KEY, amount INTEGER, pid INTEGER)"
        )

    async def fetch(self, request: td.Request) -> td.Response:
        sql = self.ctx.storage.sql
        if request.path.endswith("/add"):
            sql.exec(
                "INSERT INTO entries (amount, pid) VALUES (?, ?)",
                int(request.query["amount"]),
                os.getpid(),
            )
        rows = list(sql.exec("SELECT amount, pid FROM entries ORDER BY id"))
        return td.Response.json({"owner": os.getpid(), "entries": rows})


async def worker(request: td.Request, runtime: td.Runtime) -> td.Response:
    """``/NAME``: the counter NAME; every answer says which worker accepted it.

    ``/options`` and ``/backend``: what this worker opened its runtime and
    its storage with.
    """
    if request.path == "/options":
        return td.Response.json({**attrs.asdict(runtime.options), "pid": os.getpid()})
    if request.path == "/backend":
        backend: Any = runtime.backend
        return td.Response.json(
            {"durability": backend.durability, "max_open_sql": backend.max_open_sql}
        )
    if request.path.startswith("/ledger/"):
        ledger = runtime.namespace("ledgers").get_by_name(request.path.split("/")[2])
        return await ledger.fetch(request)  # type: ignore[no-any-return]
    if request.path.startswith("/echo/"):
        echo = runtime.namespace("echoes").get_by_name(request.path.split("/")[2])
        return await echo.fetch(request)  # type: ignore[no-any-return]
    if request.path.startswith("/tick/"):
        ticker = runtime.namespace("tickers").get_by_name("t")
        return await ticker.fetch(request)  # type: ignore[no-any-return]
    name = request.path.strip("/").split("/")[0] or "home"
    response: Any = await runtime.namespace("counters").get_by_name(name).fetch(request)
    if response.status == 101:
        return response  # type: ignore[no-any-return]
    headers = [*response.headers.items_raw(), ("x-accepted-by", str(os.getpid()))]
    return td.Response(status=response.status, headers=headers, body=response.body)


app = td.App(
    worker=worker,
    objects={"counters": Counter, "tickers": Ticker, "echoes": Echo, "ledgers": Ledger},
)
