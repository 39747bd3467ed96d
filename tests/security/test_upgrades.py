"""The gateway refuses unwelcome upgrades before any object is touched.

Checks run in this order, all before the worker: protocol (version, key),
``allowed_origins``, then the ``authenticate`` hook.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import pytest

import trio_durable as td

from ..netkit import netapp
from ..netkit.netclient import RawWs, raw_http, upgrade_head

pytestmark = pytest.mark.usefixtures("close_clients")

StartServer = Callable[..., Awaitable[int]]


async def upgrade(port: int, path: str, extra: str = "", key: str | None = None) -> bytes:
    return await raw_http(port, upgrade_head(path, extra=extra, key=key))


# ------------------------------------------------------------------ origins


async def test_allowed_origin_is_upgraded(
    start_server: StartServer, echo_runtime: td.Runtime
) -> None:
    port = await start_server(echo_runtime, netapp.worker, allowed_origins={"https://chat.example"})
    client = await RawWs.connect(port, "/rooms/ok", extra="Origin: https://chat.example\r\n")
    await client.send_text("hi")
    assert await client.receive_text() == "hi"


async def test_other_origin_gets_403_and_the_object_is_never_built(
    start_server: StartServer, echo_runtime: td.Runtime
) -> None:
    port = await start_server(echo_runtime, netapp.worker, allowed_origins={"https://chat.example"})
    answer = await upgrade(port, "/rooms/target", "Origin: https://evil.example\r\n")
    assert answer.startswith(b"HTTP/1.1 403 "), answer
    assert b"origin 'https://evil.example' is not allowed" in answer, answer
    assert netapp.built == [], "a refused upgrade never activates the object"
    assert echo_runtime.statistics().activations == 0


async def test_missing_origin_is_refused_unless_none_is_allowed(
    start_server: StartServer, echo_runtime: td.Runtime
) -> None:
    strict = await start_server(
        echo_runtime, netapp.worker, allowed_origins=["https://chat.example"]
    )
    answer = await upgrade(strict, "/rooms/tool")
    assert answer.startswith(b"HTTP/1.1 403 ") and b"no Origin header" in answer, answer
    lenient = await start_server(
        echo_runtime, netapp.worker, allowed_origins=["https://chat.example", None]
    )
    client = await RawWs.connect(lenient, "/rooms/tool")
    await client.send_text("from a command-line tool")
    assert await client.receive_text() == "from a command-line tool"


async def test_two_origin_headers_are_refused(
    start_server: StartServer, echo_runtime: td.Runtime
) -> None:
    port = await start_server(echo_runtime, netapp.worker, allowed_origins={"https://chat.example"})
    extra = "Origin: https://chat.example\r\nOrigin: https://evil.example\r\n"
    answer = await upgrade(port, "/rooms/twice", extra)
    assert answer.startswith(b"HTTP/1.1 403 "), answer
    assert netapp.built == []


async def test_allowed_origins_applies_to_upgrades_only(
    start_server: StartServer, echo_runtime: td.Runtime
) -> None:
    port = await start_server(echo_runtime, netapp.worker, allowed_origins=[])
    answer = await raw_http(
        port, b"GET /hello HTTP/1.1\r\nhost: x\r\norigin: https://anywhere.example\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 200 "), answer


async def test_allowed_origins_must_not_be_a_string(
    start_server: StartServer, echo_runtime: td.Runtime
) -> None:
    with pytest.raises(TypeError, match="not one str"):
        await start_server(echo_runtime, netapp.worker, allowed_origins="https://chat.example")


# ------------------------------------------------------------- authenticate


async def token_check(request: td.Request) -> td.Response | None:
    calls.append(request.url)
    if request.query.get("token") == "let-me-in":
        return None
    return td.Response.text("a valid token is required", status=401)


calls: list[str] = []


@pytest.fixture(autouse=True)
def _clear_calls() -> None:
    calls.clear()


async def test_authenticated_upgrade_goes_through(
    start_server: StartServer, echo_runtime: td.Runtime
) -> None:
    port = await start_server(echo_runtime, netapp.worker, authenticate=token_check)
    client = await RawWs.connect(port, "/rooms/club?token=let-me-in")
    await client.send_text("hello")
    assert await client.receive_text() == "hello"
    assert len(calls) == 1 and calls[0].endswith("/rooms/club?token=let-me-in"), calls


async def test_refused_upgrade_gets_the_hooks_answer_and_never_activates_the_object(
    start_server: StartServer, echo_runtime: td.Runtime
) -> None:
    port = await start_server(echo_runtime, netapp.worker, authenticate=token_check)
    answer = await upgrade(port, "/rooms/club?token=wrong")
    assert answer.startswith(b"HTTP/1.1 401 "), answer
    assert answer.endswith(b"a valid token is required"), answer
    assert netapp.built == [], "the object was never constructed"
    stats = echo_runtime.statistics()
    assert (stats.activations, stats.events_dispatched) == (0, 0), stats


async def test_failing_hook_gives_500_and_never_activates_the_object(
    start_server: StartServer, echo_runtime: td.Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(request: td.Request) -> td.Response | None:
        raise RuntimeError("the auth service is down")

    port = await start_server(echo_runtime, netapp.worker, authenticate=broken)
    with caplog.at_level(logging.ERROR, logger="trio_durable.gateway"):
        answer = await upgrade(port, "/rooms/club")
    assert answer.startswith(b"HTTP/1.1 500 "), answer
    assert "the auth service is down" in caplog.text, "the failure is logged"
    assert netapp.built == []


async def test_hook_returning_nonsense_gives_500(
    start_server: StartServer, echo_runtime: td.Runtime
) -> None:
    async def confused(request: td.Request) -> td.Response | None:
        return td.Response(status=101)

    port = await start_server(echo_runtime, netapp.worker, authenticate=confused)
    answer = await upgrade(port, "/rooms/club")
    assert answer.startswith(b"HTTP/1.1 500 "), answer
    assert netapp.built == []


async def test_hook_runs_after_the_origin_check_and_not_for_plain_http(
    start_server: StartServer, echo_runtime: td.Runtime
) -> None:
    port = await start_server(
        echo_runtime,
        netapp.worker,
        allowed_origins={"https://chat.example"},
        authenticate=token_check,
    )
    answer = await upgrade(port, "/rooms/club?token=let-me-in", "Origin: https://evil.example\r\n")
    assert answer.startswith(b"HTTP/1.1 403 "), answer
    answer = await raw_http(port, b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert calls == [], "the hook saw neither request"


# --------------------------------------------------------- protocol checks


@pytest.mark.parametrize("key", ["not-base64!", "c2hvcnQ="])  # the second: not 16 bytes
async def test_bad_key_is_refused_before_the_worker(
    start_server: StartServer, echo_runtime: td.Runtime, key: str
) -> None:
    port = await start_server(echo_runtime, netapp.worker)
    answer = await upgrade(port, "/rooms/keyless", key=key)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert netapp.built == [], "no object is built for a handshake that cannot complete"


async def test_bad_version_is_refused_before_the_worker(
    start_server: StartServer, echo_runtime: td.Runtime
) -> None:
    port = await start_server(echo_runtime, netapp.worker)
    head = upgrade_head("/rooms/old").replace(b"Version: 13", b"Version: 8")
    answer = await raw_http(port, head)
    assert answer.startswith(b"HTTP/1.1 426 "), answer
    assert netapp.built == []


# ------------------------------------- a refused upgrade ends its connection
#
# A proxy in front may treat a connection as a tunnel from its upgrade
# request on, whatever the answer: a request pipelined after a refused
# upgrade would then reach the server past the proxy's rules. So any answer
# but 101 to an upgrade request says ``connection: close`` and closes.

_AFTER = b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


async def _refused_then_after(port: int, head: bytes) -> bytes:
    """Send an upgrade request and a pipelined GET; all that comes back before the close."""
    # No half-close: the server has to close by itself.
    return await raw_http(port, head + _AFTER, half_close=False, within=10.0)


def _assert_refused_and_closed(answer: bytes, status: bytes) -> None:
    assert answer.startswith(b"HTTP/1.1 " + status + b" "), answer
    assert answer.count(b"HTTP/1.1 ") == 1, f"the pipelined request was not answered: {answer!r}"
    head = answer.partition(b"\r\n\r\n")[0].lower()
    assert head.count(b"\r\nconnection: ") == 1, answer
    assert b"\r\nconnection: close" in head, answer


async def _refuse_everyone(request: td.Request) -> td.Response | None:
    return td.Response.text("no", status=401)


async def _raising_hook(request: td.Request) -> td.Response | None:
    raise RuntimeError("the auth service is down")


@pytest.mark.parametrize(
    ("options", "head", "status"),
    [
        pytest.param({}, upgrade_head("/rooms/x", key="c2hvcnQ="), b"400", id="bad key"),
        pytest.param(
            {},
            upgrade_head("/rooms/x").replace(b"Version: 13", b"Version: 8"),
            b"426",
            id="bad version",
        ),
        pytest.param(
            {},
            upgrade_head("/rooms/x").replace(b"HTTP/1.1", b"HTTP/1.0"),
            b"400",
            id="HTTP/1.0",
        ),
        pytest.param(
            {"allowed_origins": {"https://chat.example"}},
            upgrade_head("/rooms/x", extra="Origin: https://evil.example\r\n"),
            b"403",
            id="origin",
        ),
        pytest.param(
            {"authenticate": _refuse_everyone}, upgrade_head("/rooms/x"), b"401", id="authenticate"
        ),
        pytest.param(
            {"authenticate": _raising_hook},
            upgrade_head("/rooms/x"),
            b"500",
            id="authenticate raises",
        ),
        pytest.param({}, upgrade_head("/nowhere"), b"404", id="the app answers 404"),
    ],
)
async def test_a_refused_upgrade_closes_its_connection(
    start_server: StartServer,
    echo_runtime: td.Runtime,
    options: dict[str, object],
    head: bytes,
    status: bytes,
) -> None:
    port = await start_server(echo_runtime, netapp.worker, **options)
    _assert_refused_and_closed(await _refused_then_after(port, head), status)


async def test_an_upgrade_the_app_cannot_complete_closes_its_connection(
    start_server: StartServer, echo_runtime: td.Runtime
) -> None:
    async def bad_101(request: td.Request, runtime: td.Runtime) -> td.Response:
        client, server = td.WebSocketPair()
        server.accept()
        return td.Response.websocket(client, headers={"x-bad": "caf\u00e9\u2603"})

    port = await start_server(echo_runtime, bad_101)
    _assert_refused_and_closed(await _refused_then_after(port, upgrade_head("/x")), b"500")


async def test_any_upgrade_header_closes_the_connection_after_a_plain_answer(
    start_server: StartServer, echo_runtime: td.Runtime
) -> None:
    # Not a WebSocket handshake (h2c), but a proxy may still tunnel it.
    head = b"GET /hello HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
    port = await start_server(echo_runtime, netapp.worker)
    _assert_refused_and_closed(await _refused_then_after(port, head), b"200")


async def test_a_plain_request_keeps_its_connection(
    start_server: StartServer, echo_runtime: td.Runtime
) -> None:
    port = await start_server(echo_runtime, netapp.worker)
    answer = await raw_http(port, _AFTER + _AFTER)
    assert answer.count(b"HTTP/1.1 200 ") == 2, answer
