"""Fixtures for the gateway and network-transport tests: real sockets on 127.0.0.1.

Clients are independent of our code: the ``websockets`` library's sync client
(run in a thread), h11 as an HTTP client, or raw sockets where a test needs
to send exactly the bytes it wants (bad frames, no reading, a TCP drop).
"""

from __future__ import annotations

import base64
import functools
import os
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import trio
import trustme

import trio_durable as td
from trio_durable._gateway._serve import serve
from trio_durable._websocket._frames import accept_key
from trio_durable._websocket._home import ConnectionHome
from trio_durable._websocket._network import NetworkTransport
from trio_durable._websocket._parking import SocketParking

from . import app
from .helpers import FakeSink, read_http_head


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def server_ssl_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture(scope="session")
def client_ssl_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


class Harness:
    """Upgrades connections by hand and serves them with a NetworkTransport.

    It stands in for the gateway so that the transport is tested alone, with
    a :class:`FakeSink` recording exactly what the transport delivers.
    """

    def __init__(self, nursery: trio.Nursery, parking: SocketParking) -> None:
        self.nursery = nursery
        self.parking = parking
        self.homes: list[ConnectionHome] = []
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.listener.setblocking(False)
        self.port: int = self.listener.getsockname()[1]
        self.url = f"ws://127.0.0.1:{self.port}/chat"
        self.clients: list[socket.socket] = []

    async def home(self, **options: Any) -> ConnectionHome:
        home = ConnectionHome(self.nursery, self.parking, **options)
        await self.nursery.start(home.run)
        self.homes.append(home)
        return home

    async def accept(
        self, home: ConnectionHome, sink: FakeSink | None = None
    ) -> tuple[NetworkTransport, FakeSink]:
        """Accept one connection, answer its handshake, start a transport."""
        await trio.lowlevel.wait_readable(self.listener)
        sock, _ = self.listener.accept()
        sock.setblocking(False)
        head, rest = await read_http_head(sock)
        key = ""
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-key":
                key = value.strip().decode()
        preamble = (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept_key(key)}\r\n\r\n"
        ).encode()
        transport = NetworkTransport(sock, home)
        sink = sink if sink is not None else FakeSink()
        transport.start(sink, initial=rest, preamble=preamble)
        return transport, sink

    async def raw_client(
        self, home: ConnectionHome, *, extra: bytes = b"", small_buffers: bool = False
    ) -> tuple[socket.socket, NetworkTransport, FakeSink]:
        """A raw socket client that did the handshake (and sent ``extra`` with it).

        ``small_buffers`` shrinks the kernel buffers on both sides, so that a
        client that does not read fills them after a few KiB.
        """
        client = socket.socket()
        if small_buffers:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(("127.0.0.1", self.port))
        self.clients.append(client)
        key = base64.b64encode(os.urandom(16)).decode()
        client.sendall(
            (
                f"GET /chat HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
            + extra
        )
        transport, sink = await self.accept(home)
        if small_buffers:
            assert transport._sock is not None
            transport._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        # Read the 101 byte by byte (the frames after it are the test's), in
        # Trio rather than a thread, so tests may use a mock clock.
        response = b""
        client.setblocking(False)
        try:
            while b"\r\n\r\n" not in response:
                try:
                    byte = client.recv(1)
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(client)
                    continue
                if not byte:
                    raise EOFError(f"the server closed during the handshake: {response!r}")
                response += byte
        finally:
            client.setblocking(True)
        assert response.startswith(b"HTTP/1.1 101"), response
        return client, transport, sink

    def close(self) -> None:
        self.listener.close()
        for client in self.clients:
            client.close()


@pytest.fixture
async def parking(nursery: trio.Nursery) -> SocketParking:
    parking = SocketParking()
    await nursery.start(parking.run)
    return parking


@pytest.fixture
async def harness(nursery: trio.Nursery, parking: SocketParking) -> AsyncIterator[Harness]:
    h = Harness(nursery, parking)
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
async def runtime() -> AsyncIterator[td.Runtime]:
    app.closes.clear()
    async with td.open_runtime(objects={"rooms": app.Room}) as rt:
        yield rt


@pytest.fixture
def start_server(nursery: trio.Nursery, runtime: td.Runtime) -> Callable[..., Awaitable[int]]:
    """``port = await start_server(**serve_options)``: serve the test app on 127.0.0.1.

    ``worker=`` replaces the test app's worker.
    """

    async def start(worker: Any = app.worker, **options: Any) -> int:
        options.setdefault("handshake_timeout", 2.0)
        port: int = await nursery.start(
            functools.partial(serve, runtime, worker, host="127.0.0.1", port=0, **options)
        )
        return port

    return start
