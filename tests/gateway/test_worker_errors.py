"""What a client gets when the worker raises: 503 when retrying can help, else 500.

503 (with ``retry-after``) means the storage or the object's process was out
of reach: nothing acknowledged is lost and the client may try again. Any
other failure of the worker is the app's bug: 500. Either way the server
goes on serving.
"""

from __future__ import annotations

import functools

import attrs
import pytest
import trio

import trio_durable as td

from ..websocket.objects import AcceptsAPair
from .helpers import raw_exchange


@attrs.define(eq=False)
class Nothing(td.DurableObject):
    pass


@attrs.define(eq=False)
class Room(AcceptsAPair):
    async def abort_me(self) -> None:
        self.ctx.abort("reset between the accept and the handshake")


def _reset_caused_by(cause: BaseException) -> td.ObjectResetError:
    try:
        raise td.ObjectResetError("the object was reset") from cause
    except td.ObjectResetError as reset:
        return reset


FAILURES: dict[str, BaseException] = {
    "storage": td.StorageError("the database is out of reach"),
    "unavailable": td.ObjectUnavailableError("no process could run the object in time"),
    "reset-by-storage": _reset_caused_by(td.StorageError("the database is out of reach")),
    "reset-by-broken-link": _reset_caused_by(
        td.ObjectUnavailableError("the link to the object's process broke")
    ),
    "reset-by-app": _reset_caused_by(KeyError("a bug")),
    "app-bug": RuntimeError("a bug"),
}

EXPECTED = {
    "storage": 503,
    "unavailable": 503,
    "reset-by-storage": 503,
    "reset-by-broken-link": 503,
    "reset-by-app": 500,
    "app-bug": 500,
}


async def worker(request: td.Request, runtime: td.Runtime) -> td.Response:
    name = request.path.strip("/")
    if name in FAILURES:
        raise FAILURES[name]
    return td.Response.text("fine")


@pytest.mark.parametrize("name", sorted(FAILURES))
async def test_the_status_says_whether_a_retry_can_help(name: str) -> None:
    async with td.open_runtime({"nothing": Nothing}) as runtime, trio.open_nursery() as nursery:
        port = await nursery.start(
            functools.partial(td.serve, runtime, worker, host="127.0.0.1", port=0)
        )
        request = f"GET /{name} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        answer = await raw_exchange(port, request.encode())
        status = int(answer.split(b" ", 2)[1])
        assert status == EXPECTED[name], answer
        if status == 503:
            assert b"retry-after: 1" in answer.lower(), answer
        fine = b"GET /fine HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        assert (await raw_exchange(port, fine)).startswith(b"HTTP/1.1 200 "), "still serving"
        nursery.cancel_scope.cancel()


async def test_an_upgrade_whose_object_was_reset_meanwhile_gets_503() -> None:
    """The object accepted the socket, then was reset before the gateway sent the 101."""

    async def resetting_worker(request: td.Request, runtime: td.Runtime) -> td.Response:
        room = runtime.namespace("rooms").get_by_name("lobby")
        response = await room.fetch(request)
        with pytest.raises(td.ObjectResetError):
            await room.abort_me()
        return response

    async with td.open_runtime({"rooms": Room}) as runtime, trio.open_nursery() as nursery:
        port = await nursery.start(
            functools.partial(td.serve, runtime, resetting_worker, host="127.0.0.1", port=0)
        )
        upgrade = (
            "GET /lobby HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        )
        answer = await raw_exchange(port, upgrade.encode())
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        assert b"retry-after: 1" in answer.lower(), answer
        assert runtime.sockets.hibernatable_count() == 0, "the object keeps no orphan socket"
        nursery.cancel_scope.cancel()
