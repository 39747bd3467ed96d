"""A failed commit closes, with 1011, the sockets whose messages' writes it lost.

The object resets and the replies held by the output gate are dropped (as
specified); without a close, the sender would wait forever for an answer to
a message the object forgot. Other sockets of the object stay open. The
disk is one whose commits fail on demand (``tests/faults/objects.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

import trio_durable as td
from trio_durable.testing import open_websocket

from ..faults.objects import FillingDisk
from .objects import Ledger


@pytest.fixture
def disk(tmp_path: Path) -> FillingDisk:
    return FillingDisk(tmp_path / "data")


@pytest.fixture
async def ledger(disk: FillingDisk) -> AsyncIterator[td.Stub]:
    async with td.open_runtime({"ledgers": Ledger}, backend=disk) as runtime:
        yield runtime.namespace("ledgers").get_by_name("l")


async def close_code(ws: td.WebSocket) -> int | None:
    """The code the server closed ``ws`` with (``None``: it answered instead)."""
    with trio.fail_after(5):
        try:
            reply = await ws.receive()
        except td.WebSocketClosedError as closed:
            return closed.code
    raise AssertionError(f"got {reply!r} instead of a close")


async def test_socket_whose_write_was_lost_is_closed_with_1011(
    ledger: td.Stub, disk: FillingDisk
) -> None:
    async with open_websocket(ledger) as ws:
        await ws.send("write a")
        assert await ws.receive() == "stored a"
        disk.full = True
        await ws.send("write b")
        assert await close_code(ws) == 1011, "the client must learn that b was not stored"
    disk.full = False
    assert not await ledger.stored("b"), "b was never committed"


async def test_other_sockets_stay_open_when_a_write_is_lost(
    ledger: td.Stub, disk: FillingDisk
) -> None:
    async with open_websocket(ledger) as writer, open_websocket(ledger) as reader:
        disk.full = True
        await writer.send("write b")
        assert await close_code(writer) == 1011
        disk.full = False
        await reader.send("still open?")
        assert await reader.receive() == "still open?", "a socket that wrote nothing lives on"
        assert reader.ready_state == td.WebSocket.OPEN


async def test_every_socket_whose_write_was_in_the_failed_commit_is_closed(
    ledger: td.Stub, disk: FillingDisk
) -> None:
    async with open_websocket(ledger) as first, open_websocket(ledger) as second:
        disk.full = True
        # Sent together: both writes land in the same batch, whose commit fails.
        await first.send("write x")
        await second.send("write y")
        codes = [await close_code(first), await close_code(second)]
        assert codes == [1011, 1011], codes
    assert disk.refused == 1, f"one commit carried both writes ({disk.refused} refused)"
