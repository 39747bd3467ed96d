"""Object classes that misbehave on purpose, and a storage backend whose disk fills up."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

import attrs
import trio
import trio.lowlevel

import trio_durable as td
from trio_durable._storage._backend import Fence, ObjectWrite
from trio_durable._storage._sqlite import SqliteBackend


def block_loop(seconds: float) -> None:
    """Block the whole event loop, on purpose: the fault under test."""
    time.sleep(seconds)


#: Constructor calls per object name, to see re-initialisation from outside.
constructed: dict[str | None, int] = {}


@attrs.define(eq=False)
class Fragile(td.DurableObject):
    """Its name says how it misbehaves: ``bad-ctor…`` raises, ``slow-ctor…`` blocks."""

    hits: int = 0

    def __attrs_post_init__(self) -> None:
        name = self.ctx.id.name or ""
        constructed[name] = constructed.get(name, 0) + 1
        if name.startswith("bad-ctor"):
            raise LookupError(f"constructor of {name} failed on purpose")
        if name.startswith("slow-ctor"):
            block_loop(0.15)

    async def hit(self) -> int:
        self.hits += 1
        return self.hits

    async def fail(self) -> None:
        raise KeyError("handler failed on purpose")

    async def block(self, seconds: float) -> int:
        """Block the whole event loop (never do this)."""
        self.hits += 1
        block_loop(seconds)
        return self.hits

    async def block_after_await(self, seconds: float) -> int:
        await trio.lowlevel.checkpoint()
        self._crunch(seconds)
        return self.hits

    def _crunch(self, seconds: float) -> None:
        block_loop(seconds)

    async def start_work(self, mode: str) -> None:
        async def fails() -> None:
            await trio.sleep(1)
            raise ValueError("background work failed on purpose")

        async def blocks() -> None:
            await trio.sleep(1)
            block_loop(0.15)

        self.ctx.wait_until({"fail": fails, "block": blocks}[mode])

    async def put(self, key: str, value: Any) -> str:
        await self.ctx.storage.put(key, value)
        return "ok"

    async def put_and_sync(self, key: str, value: Any) -> str:
        await self.ctx.storage.put(key, value)
        await self.ctx.storage.sync()
        return "synced"

    async def get(self, key: str) -> Any:
        return await self.ctx.storage.get(key)

    async def fetch(self, request: td.Request) -> td.Response:
        client, server = td.WebSocketPair()
        self.ctx.accept_websocket(server)
        return td.Response.websocket(client)

    async def websocket_message(self, ws: td.WebSocket, message: str | bytes) -> None:
        if message == "raise":
            raise RuntimeError("websocket_message failed on purpose")
        if message == "block":
            block_loop(0.15)
        self.hits += 1
        await ws.send(f"{message} #{self.hits}")


OBJECTS: dict[str, type[td.DurableObject]] = {"fragile": Fragile}


class FillingDisk(SqliteBackend):
    """A SQLite backend whose disk can be declared full: commits then fail as SQLite's do."""

    def __init__(self, data_dir: Any) -> None:
        super().__init__(data_dir)
        self.full = False
        self.refused = 0

    async def commit(
        self, writes: Sequence[ObjectWrite], fence: Fence | None = None
    ) -> frozenset[int]:
        if self.full and writes:
            self.refused += 1
            raise sqlite3.OperationalError("database or disk is full")
        return await super().commit(writes, fence)
