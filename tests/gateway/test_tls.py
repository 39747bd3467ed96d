"""``serve(ssl_context=...)``: HTTPS and WSS with a certificate made by trustme."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable

import trio
from websockets.sync.client import connect

import trio_durable as td

from ..polling import eventually
from .helpers import PATIENCE, HttpClient

StartServer = Callable[..., Awaitable[int]]


async def test_https_request(
    start_server: StartServer, server_ssl_context, client_ssl_context
) -> None:
    port = await start_server(ssl_context=server_ssl_context)
    with trio.fail_after(PATIENCE):
        client = await HttpClient.connect(port, ssl_context=client_ssl_context)
        first = await client.request("GET", "/hello?name=tls")
        second = await client.request("POST", "/echo", body=b"secret" * 1000)
        await client.aclose()
    assert first[:1] == (200,) and first[2] == b"hello tls", first
    assert second[2] == b"secret" * 1000, "keep-alive over TLS"


async def test_https_url_scheme(
    start_server: StartServer, server_ssl_context, client_ssl_context
) -> None:
    port = await start_server(ssl_context=server_ssl_context)
    client = await HttpClient.connect(port, ssl_context=client_ssl_context)
    _status, _headers, body = await client.request("GET", "/url")
    await client.aclose()
    assert body == b"https://example.test/url", body


async def test_wss_echo_and_parking(
    start_server: StartServer,
    runtime: td.Runtime,
    server_ssl_context: ssl.SSLContext,
    client_ssl_context: ssl.SSLContext,
) -> None:
    port = await start_server(ssl_context=server_ssl_context, park_after=0.05)

    def open_client():  # type: ignore[no-untyped-def]
        return connect(
            f"wss://127.0.0.1:{port}/rooms/secure",
            ssl=client_ssl_context,
            ping_interval=None,
            close_timeout=0.5,
            proxy=None,
            legacy=True,
        )

    async def in_thread(fn, *args):  # type: ignore[no-untyped-def]
        with trio.fail_after(PATIENCE):
            return await trio.to_thread.run_sync(fn, *args)

    client = await in_thread(open_client)
    try:
        assert await in_thread(client.recv, 1) == "welcome"
        await in_thread(client.send, "over tls")
        assert await in_thread(client.recv, 1) == "over tls"
        # A TLS connection with nothing pending is parked like a plain one.
        parking = runtime.sockets.parking
        await eventually(lambda: len(parking) > 0)
        await in_thread(client.send, "after parking")
        assert await in_thread(client.recv, 1) == "after parking"
        big = "y" * 200_000  # several TLS records, read across wake-ups
        await in_thread(client.send, big)
        assert await in_thread(client.recv, 1) == big
    finally:
        await in_thread(client.close)
    assert client.close_code == 1000, client.close_code
