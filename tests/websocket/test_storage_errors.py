"""A socket handler that raises StorageError closes its socket with 1011.

The message was not handled; a client waiting for an answer would otherwise
wait forever with its socket open (a stored value that cannot be decoded made
a chat room's join hang that way). The object's other sockets stay open. The
undecodable value is a pickle planted in a real SQLite file, as a tampered or
foreign data directory would hold.
"""

from __future__ import annotations

import contextlib
import functools
import pickle
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import websockets.exceptions
import websockets.sync.client

import trio_durable as td
from trio_durable._websocket._hub import STORAGE_ERROR_REASON
from trio_durable.testing import open_websocket

from .objects import AcceptsAPair

#: Generous: a failing run (no close) waits this long, a passing one never does.
PATIENCE = 10


@attrs.define(eq=False)
class Shelf(AcceptsAPair):
    """``"get K"`` answers the value stored under K; ``"boom"`` raises a plain error."""

    async def websocket_message(self, ws: td.WebSocket, message: str | bytes) -> None:
        assert isinstance(message, str)
        if message == "boom":
            raise RuntimeError("a bug, not a storage error")
        if message.startswith("in a task "):  # the error reaches us in an ExceptionGroup
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.websocket_message, ws, message.removeprefix("in a task "))
            return
        key = message.removeprefix("get ")
        await ws.send(repr(await self.ctx.storage.get(key)))

    async def put(self, key: str, value: Any) -> None:
        await self.ctx.storage.put(key, value)


@pytest.fixture
async def data_dir(tmp_path: Path) -> Path:
    """A data directory where ``shelves:s`` holds ``good`` and a pickle under ``bad``."""
    async with td.open_runtime({"shelves": Shelf}, tmp_path) as runtime:
        stub = runtime.namespace("shelves").get_by_name("s")
        await stub.put("good", 1)
        await stub.put("bad", 2)
    with contextlib.closing(sqlite3.connect(tmp_path / "trio_durable.sqlite3")) as db:
        planted = db.execute(
            "UPDATE _td_kv SET value = ? WHERE key = 'bad'", (pickle.dumps({"x": 1}),)
        )
        assert planted.rowcount == 1, "the row to damage exists"
        db.commit()
    return tmp_path


@pytest.fixture
async def shelf(data_dir: Path) -> AsyncIterator[td.Stub]:
    async with td.open_runtime({"shelves": Shelf}, data_dir) as runtime:
        yield runtime.namespace("shelves").get_by_name("s")


async def closed_with(ws: td.WebSocket) -> tuple[int, str]:
    """The code and reason the server closed ``ws`` with (fails if it answers instead)."""
    with trio.fail_after(PATIENCE):
        try:
            reply = await ws.receive()
        except td.WebSocketClosedError as closed:
            return closed.code, closed.reason
    raise AssertionError(f"got {reply!r} instead of a close")


async def test_storage_error_in_a_handler_closes_its_socket_with_1011(shelf: td.Stub) -> None:
    async with open_websocket(shelf) as ws:
        await ws.send("get good")
        assert await ws.receive() == "1", "a readable value is answered"
        await ws.send("get bad")
        assert await closed_with(ws) == (1011, STORAGE_ERROR_REASON), (
            "the client must learn that its message was not handled"
        )


async def test_storage_error_from_a_handler_task_closes_its_socket(shelf: td.Stub) -> None:
    async with open_websocket(shelf) as ws:
        await ws.send("in a task get bad")
        assert (await closed_with(ws))[0] == 1011, "found inside the handler's ExceptionGroup"


async def test_other_sockets_stay_open_after_a_storage_error(shelf: td.Stub) -> None:
    async with open_websocket(shelf) as failing, open_websocket(shelf) as other:
        await failing.send("get bad")
        assert (await closed_with(failing))[0] == 1011
        await other.send("get good")
        assert await other.receive() == "1", "a socket whose handler did not fail lives on"
        assert other.ready_state == td.WebSocket.OPEN


async def test_other_errors_leave_the_socket_open(shelf: td.Stub) -> None:
    async with open_websocket(shelf) as ws:
        await ws.send("boom")
        await ws.send("get good")
        assert await ws.receive() == "1", "a handler's own bug does not close its socket"


async def test_storage_error_closes_a_network_socket_with_1011(data_dir: Path) -> None:
    async def worker(request: td.Request, runtime: td.Runtime) -> td.Response:
        response: td.Response = await runtime.namespace("shelves").get_by_name("s").fetch(request)
        return response

    def exchange(url: str) -> tuple[str | bytes, int | None, str | None]:
        with websockets.sync.client.connect(url, open_timeout=5, close_timeout=2) as client:
            client.send("get good")
            good = client.recv(PATIENCE)
            client.send("get bad")
            try:
                client.recv(PATIENCE)
            except websockets.exceptions.ConnectionClosed as closed:
                if closed.rcvd is None:
                    return good, None, None
                return good, closed.rcvd.code, closed.rcvd.reason
            raise AssertionError("the server answered instead of closing")

    async with (
        td.open_runtime({"shelves": Shelf}, data_dir) as runtime,
        trio.open_nursery() as nursery,
    ):
        serve: Callable[..., Any] = functools.partial(
            td.serve, runtime, worker, host="127.0.0.1", port=0
        )
        port = await nursery.start(serve)
        outcome = await trio.to_thread.run_sync(exchange, f"ws://127.0.0.1:{port}/")
        nursery.cancel_scope.cancel()
    assert outcome == ("1", 1011, STORAGE_ERROR_REASON), outcome
