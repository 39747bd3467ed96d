"""Request head and body sizes are limited by default, and the limits are configurable."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

import trio_durable as td

from ..netkit import netapp
from ..netkit.netclient import raw_http

pytestmark = pytest.mark.usefixtures("close_clients")

StartServer = Callable[..., Awaitable[int]]
KIB = 1024


def head_with(header_bytes: int) -> bytes:
    return b"GET /hello HTTP/1.1\r\nhost: x\r\nx-filler: " + b"a" * header_bytes + b"\r\n\r\n"


def post(body: bytes) -> bytes:
    return b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


async def test_default_head_limit_is_16_kib(
    start_server: StartServer, echo_runtime: td.Runtime
) -> None:
    port = await start_server(echo_runtime, netapp.worker)
    assert (await raw_http(port, head_with(15 * KIB))).startswith(b"HTTP/1.1 200 ")
    answer = await raw_http(port, head_with(17 * KIB))
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    assert b"the limit is 16,384" in answer, answer


async def test_default_body_limit_is_1_mib(
    start_server: StartServer, echo_runtime: td.Runtime
) -> None:
    port = await start_server(echo_runtime, netapp.worker)
    ok = await raw_http(port, post(b"b" * (1024 * KIB)), within=5)
    assert ok.startswith(b"HTTP/1.1 200 ") and ok.endswith(b"b" * 100), ok[:100]
    answer = await raw_http(port, post(b"b" * (2048 * KIB)), within=5)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:100]
    assert b"body is 2,097,152 bytes; the limit is 1,048,576" in answer, answer


async def test_limits_are_configurable_and_named_in_the_answer(
    start_server: StartServer, echo_runtime: td.Runtime
) -> None:
    port = await start_server(
        echo_runtime, netapp.worker, max_header_bytes=2 * KIB, max_body_bytes=100
    )
    answer = await raw_http(port, head_with(3 * KIB))
    assert answer.startswith(b"HTTP/1.1 431 ") and b"the limit is 2,048" in answer, answer
    answer = await raw_http(port, post(b"b" * 101))
    assert answer.startswith(b"HTTP/1.1 413 ") and b"the limit is 100" in answer, answer
    assert (await raw_http(port, post(b"b" * 100))).startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max_header_bytes", 0),
        ("max_body_bytes", -1),
        ("write_timeout", 0),
        ("frame_timeout", float("inf")),
        ("max_messages_per_second", 0),
        ("handshake_timeout", -1),
    ],
)
async def test_bad_limit_values_are_refused_with_their_name(
    start_server: StartServer, echo_runtime: td.Runtime, option: str, value: float
) -> None:
    with pytest.raises(ValueError, match=rf"{option} must be .*got {value!r}"):
        await start_server(echo_runtime, netapp.worker, **{option: value})
