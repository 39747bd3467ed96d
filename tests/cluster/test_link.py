"""Links between processes: calls both ways, descriptors, cancellation, broken links."""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from typing import Any

import pytest
import trio
import trio.testing

from trio_durable import _codec
from trio_durable._cluster._link import (
    PROXY,
    Connection,
    LinkClosedError,
    LinkUnavailableError,
    Peer,
    handshake_client,
    handshake_server,
    link_key,
)

KEY = link_key(b"s" * 32)


class Server:
    def __init__(self) -> None:
        self.cancelled: list[str] = []
        self.started = trio.Event()

    async def handle(self, op: str, body: Any, fds: list[int]) -> tuple[Any, Sequence[int]]:
        if op == "echo":
            return body, fds
        if op == "read_fd":
            [fd] = fds
            try:
                return os.read(fd, 100), ()
            finally:
                os.close(fd)
        if op == "hang":
            self.started.set()
            try:
                await trio.sleep_forever()
            finally:
                self.cancelled.append(body)
        if op == "fail":
            raise ValueError("handler bug")
        raise AssertionError(op)


@pytest.fixture
async def pair(nursery: trio.Nursery) -> tuple[Peer, Server, Connection]:
    a, b = trio.socket.socketpair()
    server = Server()
    client_conn, server_conn = Connection(a), Connection(b)

    async def refuse(op: str, body: Any, fds: list[int]) -> tuple[Any, Sequence[int]]:
        raise AssertionError("the client serves nothing")

    client = Peer(client_conn, refuse, name="server")
    serving = Peer(server_conn, server.handle, name="client")
    nursery.start_soon(client.run)
    nursery.start_soon(serving.run)
    return client, server, server_conn


async def test_a_call_returns_the_reply(pair: tuple[Peer, Server, Connection]) -> None:
    client, _, _ = pair
    assert await client.call("echo", {"a": [1, 2]}) == ({"a": [1, 2]}, [])


async def test_calls_are_multiplexed(pair: tuple[Peer, Server, Connection]) -> None:
    client, _, _ = pair
    results: dict[int, Any] = {}

    async def one(n: int) -> None:
        results[n] = (await client.call("echo", n))[0]

    async with trio.open_nursery() as nursery:
        for n in range(50):
            nursery.start_soon(one, n)
    assert results == {n: n for n in range(50)}


async def test_a_descriptor_travels_with_its_call(pair: tuple[Peer, Server, Connection]) -> None:
    client, _, _ = pair
    read_end, write_end = os.pipe()
    os.write(write_end, b"through the link")
    try:
        assert await client.call("read_fd", None, [read_end]) == (b"through the link", [])
    finally:
        os.close(read_end)
        os.close(write_end)


async def test_cancelling_a_call_cancels_the_remote_request(
    pair: tuple[Peer, Server, Connection],
) -> None:
    client, server, _ = pair
    with trio.move_on_after(5) as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.call, "hang", "first")
            await server.started.wait()
            nursery.cancel_scope.cancel()
        with trio.fail_after(5):
            while not server.cancelled:
                await trio.sleep(0.01)
    assert not scope.cancelled_caught
    assert server.cancelled == ["first"], "the remote handler was cancelled"


async def test_a_broken_link_fails_the_calls_in_flight(
    pair: tuple[Peer, Server, Connection],
) -> None:
    client, server, server_conn = pair
    async with trio.open_nursery() as nursery:
        outcome: list[BaseException] = []

        async def waiting() -> None:
            try:
                await client.call("hang", "x")
            except LinkClosedError as exc:
                outcome.append(exc)

        nursery.start_soon(waiting)
        await server.started.wait()
        server_conn.close()
    assert len(outcome) == 1, "the call in flight saw the link break"
    with pytest.raises(LinkClosedError):
        await client.call("echo", 1)


async def test_a_failing_handler_is_a_clear_error_not_a_hang(
    pair: tuple[Peer, Server, Connection],
) -> None:
    client, _, _ = pair
    with pytest.raises(RuntimeError, match="failed to serve 'fail': ValueError: handler bug"):
        await client.call("fail", None)
    assert await client.call("echo", "still") == ("still", []), "the link lives on"


async def test_handshake_admits_a_member_of_the_deployment() -> None:
    a, b = trio.socket.socketpair()
    client, server = Connection(a), Connection(b)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(handshake_client, client, KEY, "m1", PROXY)
        assert await handshake_server(server, KEY) == ("m1", PROXY)
    # Both ends tag their frames now, under this connection's own keys.
    await client.send(["hello", b"\x00" * 3])
    assert await server.receive() == (["hello", b"\x00" * 3], [])
    await server.send("back")
    assert await client.receive() == ("back", [])
    client.close()
    server.close()


class OnPath:
    """A proved link with an attacker in the middle, who sees and writes raw bytes.

    The handshake passes through untouched; afterwards ``intercept()``
    returns what the client sent, and ``inject()`` delivers bytes to the server.
    """

    def __init__(self) -> None:
        a, self.to_client = trio.socket.socketpair()
        self.to_server, b = trio.socket.socketpair()
        self.client, self.server = Connection(a), Connection(b)

    async def prove(self) -> None:
        async def forward(source: trio.socket.SocketType, sink: trio.socket.SocketType) -> None:
            while True:
                await sink.send(await source.recv(65536))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(forward, self.to_client, self.to_server)
            nursery.start_soon(forward, self.to_server, self.to_client)
            async with trio.open_nursery() as handshake:
                handshake.start_soon(handshake_client, self.client, KEY, "m1")
                await handshake_server(self.server, KEY)
            nursery.cancel_scope.cancel()

    async def intercept(self) -> bytes:
        return await self.to_client.recv(65536)

    async def inject(self, data: bytes) -> None:
        await self.to_server.send(data)

    def close(self) -> None:
        for each in (self.client, self.server):
            each.close()
        self.to_client.close()
        self.to_server.close()


def _frame(message: object) -> bytes:
    payload = _codec.encode(message, where="test")
    return struct.pack(">IH", len(payload), 0) + payload


async def test_a_forged_frame_is_refused_after_the_handshake() -> None:
    path = OnPath()
    await path.prove()
    await path.inject(_frame(["req", 1, "invoke", ["forged"]]) + b"\x00" * 16)
    with pytest.raises(LinkClosedError, match="wrong tag"):
        await path.server.receive()
    path.close()


async def test_an_altered_frame_is_refused() -> None:
    path = OnPath()
    await path.prove()
    await path.client.send(["req", 1, "invoke", ["amount", 10]])
    altered = bytearray(await path.intercept())
    altered[-20] ^= 0x01  # one bit of the payload
    await path.inject(bytes(altered))
    with pytest.raises(LinkClosedError, match="wrong tag"):
        await path.server.receive()
    path.close()


async def test_a_replayed_frame_is_refused() -> None:
    path = OnPath()
    await path.prove()
    await path.client.send(["req", 1, "invoke", ["pay", 10]])
    genuine = await path.intercept()
    await path.inject(genuine)
    assert await path.server.receive() == (["req", 1, "invoke", ["pay", 10]], [])
    await path.inject(genuine)  # the same bytes again: the sequence number moved on
    with pytest.raises(LinkClosedError, match="wrong tag"):
        await path.server.receive()
    path.close()


async def test_the_client_refuses_a_server_without_the_key() -> None:
    a, b = trio.socket.socketpair()
    client, impostor = Connection(a), Connection(b)
    refused: list[BaseException] = []

    async def connecting() -> None:
        try:
            await handshake_client(client, KEY, "m1")
        except LinkClosedError as exc:
            refused.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(connecting)
        # The impostor accepts whatever proof it gets, and cannot prove itself.
        await impostor.send(["challenge", b"c" * 32])
        await impostor.receive()
        await impostor.send(["welcome", b"\x00" * 32])
    assert refused and "failed to prove its own" in str(refused[0])
    client.close()
    impostor.close()


async def test_handshake_refuses_a_stranger() -> None:
    a, b = trio.socket.socketpair()
    client, server = Connection(a), Connection(b)
    refused: list[BaseException] = []

    async def stranger() -> None:
        try:
            await handshake_client(client, link_key(b"o" * 32), "intruder")
        except LinkClosedError as exc:
            refused.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stranger)
        with pytest.raises(LinkClosedError, match="failed to prove"):
            await handshake_server(server, KEY)
        server.close()
    assert refused, "the stranger learned it was refused"
    client.close()


async def test_garbage_on_a_link_breaks_it_cleanly() -> None:
    a, b = trio.socket.socketpair()
    connection = Connection(b)
    await a.send(b"\x00\x00\x00\x05\x00\x00hello")
    with pytest.raises(LinkClosedError, match="undecodable"):
        await connection.receive()
    a.close()
    connection.close()


async def test_finishing_a_link_answers_the_calls_already_sent_then_closes(
    nursery: trio.Nursery,
) -> None:
    a, b = trio.socket.socketpair()
    gate = trio.Event()

    async def slow(op: str, body: Any, fds: list[int]) -> tuple[Any, Sequence[int]]:
        await gate.wait()
        return body, ()

    async def refuse(op: str, body: Any, fds: list[int]) -> tuple[Any, Sequence[int]]:
        raise AssertionError("the client serves nothing")

    client = Peer(Connection(a), refuse, name="server")
    server = Peer(Connection(b), slow, name="client")
    nursery.start_soon(client.run)
    nursery.start_soon(server.run)
    replies: list[Any] = []

    async def call() -> None:
        replies.append(await client.call("slow", "sent before"))

    with trio.fail_after(5):
        async with trio.open_nursery() as inner:
            inner.start_soon(call)
            await trio.testing.wait_all_tasks_blocked()
            inner.start_soon(server.finish)
            await trio.testing.wait_all_tasks_blocked()
            assert client.is_broken, "the client heard the bye: it starts no call"
            with pytest.raises(LinkUnavailableError):
                await client.call("slow", "sent after the bye")
            assert replies == [], "the call sent before waits for its answer"
            gate.set()
    assert replies == [("sent before", [])], "answered, not cut"


async def test_finishing_a_link_is_cut_when_cancelled(nursery: trio.Nursery) -> None:
    a, b = trio.socket.socketpair()

    async def hang(op: str, body: Any, fds: list[int]) -> tuple[Any, Sequence[int]]:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    client = Peer(Connection(a), hang, name="server")
    server = Peer(Connection(b), hang, name="client")
    nursery.start_soon(client.run)
    nursery.start_soon(server.run)
    outcome: list[BaseException] = []

    async def call() -> None:
        try:
            await client.call("hang", None)
        except LinkClosedError as exc:
            outcome.append(exc)

    async with trio.open_nursery() as inner:
        inner.start_soon(call)
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(0.5):
            await server.finish()
    assert len(outcome) == 1 and not isinstance(outcome[0], LinkUnavailableError), outcome


async def test_a_large_frame_before_the_handshake_is_refused_without_reading_it() -> None:
    """A stranger cannot make a process buffer megabytes: before proof, frames are small."""
    a, b = trio.socket.socketpair()
    server = Connection(b)
    try:
        with trio.fail_after(5):  # the frame never arrives: a wait for it would hang
            async with trio.open_nursery() as nursery:

                async def stranger() -> None:
                    await a.recv(4096)  # the challenge
                    await a.send(struct.pack(">IH", 1024 * 1024, 0) + b"\x00" * 10)

                nursery.start_soon(stranger)
                with pytest.raises(LinkClosedError, match="before the handshake; the limit is"):
                    await handshake_server(server, KEY)
    finally:
        server.close()
        a.close()
