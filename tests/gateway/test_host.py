"""The request target, not the Host header, decides ``request.path`` and ``request.query``.

The Host header must be a valid ``host[:port]`` (RFC 3986: a reg-name, an
IPv4 address or a bracketed IP literal) or the request gets 400; HTTP/1.1
without Host gets 400; an absolute-form target (``GET http://h/p``) names
the authority itself (RFC 9112 section 3.2.2). Clients send raw bytes, so
nothing between the test and the gateway normalises them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import trio_durable as td

from .helpers import raw_exchange

StartServer = Callable[..., Awaitable[int]]

#: Every request the echo worker saw, as (path, query, url).
seen: list[tuple[str, dict[str, str], str]] = []


async def echo_target(request: td.Request, runtime: Any) -> td.Response:
    seen.append((request.path, request.query, request.url))
    return td.Response.json({"path": request.path, "query": request.query, "url": request.url})


@pytest.fixture
async def port(start_server: StartServer) -> int:
    seen.clear()
    return await start_server(worker=echo_target)


async def ask(port: int, target: str, host: str | None, version: str = "1.1") -> tuple[int, Any]:
    """Send one request with exactly this target and Host; return (status, body)."""
    head = f"GET {target} HTTP/{version}\r\n"
    if host is not None:
        head += f"Host: {host}\r\n"
    head += "Connection: close\r\n\r\n"
    answer = await raw_exchange(port, head.encode("latin-1"))
    assert answer.startswith(b"HTTP/1.1 "), f"no HTTP answer to {head!r}: {answer!r}"
    status = int(answer[9:12])
    body = answer.partition(b"\r\n\r\n")[2]
    return status, (json.loads(body) if status == 200 else body)


# ------------------------------------------------------------------ the attack


async def test_host_with_a_path_cannot_rewrite_the_path(port: int) -> None:
    status, body = await ask(port, "/somewhere/else?real=1", "127.0.0.1/whoami/a?injected=1#")
    assert status == 400, f"a Host with a path must be refused, got {status}: {body!r}"
    assert seen == [], f"the worker must not run: it saw {seen}"


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1/whoami",
        "127.0.0.1?injected=1",
        "127.0.0.1#frag",
        "evil.example@127.0.0.1",
        "user:pass@127.0.0.1",
        "127.0.0.1:80/x",
        "127.0.0.1\\x",
        "a b",
        "127.0.0.1:8o",
        "127.0.0.1:65536",
        "127.0.0.1:80:80",
        "[::1",
        "::1",
        "[::1]x",
        "[::1]:80/x",
        "[fe80::1%25eth0]",
        "[not-an-ip]",
        "caf\xe9.example",
        "",
    ],
)
async def test_invalid_host_gets_400(port: int, host: str) -> None:
    status, body = await ask(port, "/somewhere?real=1", host)
    assert status == 400, f"Host {host!r} must be refused, got {status}: {body!r}"
    assert seen == [], f"the worker must not run for Host {host!r}: it saw {seen}"


@pytest.mark.parametrize(
    "host",
    [
        "example.test",
        "example.test:8080",
        "127.0.0.1",
        "127.0.0.1:80",
        "[::1]",
        "[::1]:8080",
        "[2001:db8::7]:443",
        "[v1.fe80::a+en1]",
        "xn--caf-dma.example",
        "a-b_c~d.example",
        "%65xample.test",
        "example.test:",
    ],
)
async def test_valid_host_is_served_with_the_targets_path_and_query(port: int, host: str) -> None:
    status, body = await ask(port, "/somewhere/else?real=1&x=%2F", host)
    assert status == 200, f"Host {host!r} is valid, got {status}: {body!r}"
    assert (body["path"], body["query"]) == ("/somewhere/else", {"real": "1", "x": "/"}), body
    assert body["url"] == f"http://{host}/somewhere/else?real=1&x=%2F", body


async def test_an_upper_case_ipvfuture_host_is_served_without_an_error(
    port: int, caplog: pytest.LogCaptureFixture
) -> None:
    # RFC 3986 accepts "V"; urllib.parse does not, so the URL spells it "v".
    status, body = await ask(port, "/somewhere/else?real=1", "[V9.x]:80")
    assert status == 200, f"an accepted Host is served, got {status}: {body!r}"
    assert (body["path"], body["query"]) == ("/somewhere/else", {"real": "1"}), body
    assert body["url"] == "http://[v9.x]:80/somewhere/else?real=1", body
    assert "Traceback" not in caplog.text, caplog.text


async def test_missing_host_on_http_1_1_gets_400(port: int) -> None:
    status, body = await ask(port, "/somewhere", None)
    assert status == 400, f"HTTP/1.1 without Host must be refused, got {status}: {body!r}"


async def test_missing_host_on_http_1_0_uses_the_servers_address(port: int) -> None:
    status, body = await ask(port, "/somewhere?real=1", None, version="1.0")
    assert status == 200, f"HTTP/1.0 needs no Host, got {status}: {body!r}"
    assert body["url"] == f"http://127.0.0.1:{port}/somewhere?real=1", body


async def test_fragment_in_the_target_gets_400(port: int) -> None:
    status, body = await ask(port, "/somewhere#?x=1", "example.test")
    assert status == 400, f"a request target has no fragment, got {status}: {body!r}"


@pytest.mark.parametrize("target", ["*", "example.test:443", "somewhere", "ftp://example.test/x"])
async def test_target_that_is_neither_a_path_nor_an_http_url_gets_400(
    port: int, target: str
) -> None:
    status, body = await ask(port, target, "example.test")
    assert status == 400, f"target {target!r} must be refused, got {status}: {body!r}"


# ------------------------------------------------------- absolute-form targets


async def test_absolute_form_target_authority_wins_over_host(port: int) -> None:
    status, body = await ask(port, "http://other.example:81/p/q?real=1", "example.test")
    assert status == 200, f"got {status}: {body!r}"
    assert body == {
        "path": "/p/q",
        "query": {"real": "1"},
        "url": "http://other.example:81/p/q?real=1",
    }, body


async def test_absolute_form_without_a_path_is_the_root(port: int) -> None:
    status, body = await ask(port, "http://other.example?real=1", "example.test")
    assert status == 200, f"got {status}: {body!r}"
    assert (body["path"], body["url"]) == ("/", "http://other.example/?real=1"), body


async def test_absolute_form_scheme_is_the_connections(port: int) -> None:
    # A plain-text client cannot make the worker believe it came over TLS.
    status, body = await ask(port, "https://other.example/p", "example.test")
    assert status == 200, f"got {status}: {body!r}"
    assert body["url"] == "http://other.example/p", body


async def test_absolute_form_still_needs_a_host_header_on_http_1_1(port: int) -> None:
    status, body = await ask(port, "http://other.example/p", None)
    assert status == 400, f"RFC 9112 needs Host even then, got {status}: {body!r}"


async def test_absolute_form_still_needs_a_valid_host_header(port: int) -> None:
    status, body = await ask(port, "http://other.example/p", "bad/host")
    assert status == 400, f"an invalid Host is refused even then, got {status}: {body!r}"


@pytest.mark.parametrize(
    "target",
    [
        "http://user@other.example/p",
        "http://other.example/p#frag",
        "http://other.example:http/p",
        "http:///p",
        "http://[::1/p",
    ],
)
async def test_absolute_form_with_a_bad_authority_gets_400(port: int, target: str) -> None:
    status, body = await ask(port, target, "example.test")
    assert status == 400, f"target {target!r} must be refused, got {status}: {body!r}"
