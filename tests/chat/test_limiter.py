"""The RateLimiter object and client addresses, in virtual time (no sockets)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
import trio.testing

import trio_durable as td
from examples.chat import ChatConfig, make_app
from examples.chat.server import RATE_LIMITED, TOO_FAST, admit, client_ip
from trio_durable.testing import open_websocket


def limiter(runtime: td.Runtime, ip: str = "192.0.2.1") -> td.Stub:
    return runtime.namespace("limiters").get_by_name(ip)


#: Cloudflare's per-IP numbers (4 at once, then one per 5 s), whose arithmetic
#: the limiter tests below spell out; the demo's defaults are tested further down.
CLOUDFLARE = ChatConfig(rate_burst=4, rate_interval=5.0)


@pytest.fixture
async def runtime(runtime_factory: Any) -> Any:
    app = make_app(CLOUDFLARE)
    async with runtime_factory(objects=app.objects, env=app.env) as rt:
        yield rt


@pytest.fixture
async def default_runtime(runtime_factory: Any) -> Any:
    app = make_app(ChatConfig())  # the settings the demo runs with
    async with runtime_factory(objects=app.objects, env=app.env) as rt:
        yield rt


async def consume(stub: td.Stub) -> float:
    wait: float = await stub.consume()
    return wait


async def test_burst_of_four_then_one_per_five_seconds(
    runtime: td.Runtime, autojump_clock: trio.testing.MockClock
) -> None:
    stub = limiter(runtime)
    assert [await consume(stub) for _ in range(4)] == [0.0] * 4, "a burst of 4 passes"
    assert await consume(stub) == pytest.approx(5.0), "the 5th waits 5 s"
    await trio.sleep(4.9)
    assert await consume(stub) == pytest.approx(0.1), "a refusal does not spend anything"
    await trio.sleep(0.1)
    assert await consume(stub) == 0.0, "one more after 5 s"
    assert await consume(stub) == pytest.approx(5.0)
    await trio.sleep(10)
    assert [await consume(stub) for _ in range(3)] == [0.0, 0.0, pytest.approx(5.0)], (
        "10 s of silence earn two messages"
    )


async def test_limiters_are_per_ip(
    runtime: td.Runtime, autojump_clock: trio.testing.MockClock
) -> None:
    for _ in range(4):
        await consume(limiter(runtime, "192.0.2.1"))
    assert await consume(limiter(runtime, "192.0.2.1")) > 0
    assert await consume(limiter(runtime, "192.0.2.2")) == 0.0


async def test_a_limiting_limiter_does_not_hibernate_its_state_away(
    runtime: td.Runtime, autojump_clock: trio.testing.MockClock
) -> None:
    stub = limiter(runtime)
    for _ in range(4):
        await consume(stub)  # next free slot: t = 20
    await trio.sleep(12)  # past hibernate_after (10 s)
    await trio.testing.wait_all_tasks_blocked()
    assert runtime.statistics().evictions == 0, "still limiting: kept awake"
    assert [await consume(stub) for _ in range(3)] == [0.0, 0.0, pytest.approx(3.0)], (
        "at t=12 two slots have come back, not a whole new burst"
    )


async def test_an_idle_limiter_hibernates_once_it_forgot_everything(
    runtime: td.Runtime, autojump_clock: trio.testing.MockClock
) -> None:
    stub = limiter(runtime)
    for _ in range(4):
        await consume(stub)  # its state is worth nothing from t = 20
    await trio.sleep(29.9)
    await trio.testing.wait_all_tasks_blocked()
    assert runtime.statistics().live_objects == 1
    await trio.sleep(0.2)
    await trio.testing.wait_all_tasks_blocked()
    assert runtime.statistics().live_objects == 0, "evicted 10 s after its state expired"
    assert [await consume(stub) for _ in range(5)] == [0.0] * 4 + [pytest.approx(5.0)]


async def test_chat_rate_limit_lifts_after_the_interval(
    runtime: td.Runtime, autojump_clock: trio.testing.MockClock
) -> None:
    """The room asks the limiter of the socket's IP (in-memory client, virtual time)."""
    stub = runtime.namespace("rooms").get_by_name("lobby")
    headers = {"x-chat-client-ip": "192.0.2.9"}
    async with open_websocket(stub, headers=headers) as ws:
        await ws.send('{"name": "ada"}')
        assert await ws.receive() == '{"joined": "ada"}'
        assert await ws.receive() == '{"ready": true}'
        for i in range(5):
            await ws.send(f'{{"message": "m{i}"}}')
        replies = [await ws.receive() for _ in range(5)]
        assert ["error" in reply for reply in replies] == [False] * 4 + [True], replies
        await trio.sleep(5)
        await ws.send('{"message": "later"}')
        assert '"later"' in await ws.receive()


def test_client_ip_is_the_tcp_peer_unless_a_trusted_proxy_forwards() -> None:
    forwarded = {"x-forwarded-for": "203.0.113.7, 198.51.100.2"}
    direct = td.Request(headers=forwarded, client=("192.0.2.1", 5000))
    assert client_ip(direct, frozenset()) == "192.0.2.1", "an untrusted header is ignored"
    via_proxy = td.Request(headers=forwarded, client=("10.0.0.1", 5000))
    assert client_ip(via_proxy, frozenset({"10.0.0.1"})) == "198.51.100.2", (
        "the rightmost hop not added by a trusted proxy"
    )
    assert client_ip(via_proxy, frozenset({"10.0.0.1", "198.51.100.2"})) == "203.0.113.7"
    bare = td.Request(client=("10.0.0.1", 5000))
    assert client_ip(bare, frozenset({"10.0.0.1"})) == "10.0.0.1"


def test_config_from_environment() -> None:
    config = ChatConfig.from_environ(
        {
            "CHAT_RATE_BURST": "2",
            "CHAT_RATE_INTERVAL": "0.5",
            "CHAT_SESSION_BURST": "3",
            "CHAT_SESSION_INTERVAL": "2",
            "CHAT_TRUSTED_PROXIES": "a, b",
        }
    )
    assert config == ChatConfig(
        rate_burst=2,
        rate_interval=0.5,
        session_burst=3,
        session_interval=2.0,
        trusted_proxies=frozenset("ab"),
    )
    assert ChatConfig.from_environ({}) == ChatConfig(
        rate_burst=20, rate_interval=0.5, session_burst=5, session_interval=1.0
    )


def test_admit_is_a_burst_then_one_per_interval() -> None:
    state = 0.0
    for _ in range(3):
        wait, state = admit(state, 100.0, burst=3, interval=2.0)
        assert wait == 0.0
    assert admit(state, 100.0, burst=3, interval=2.0) == (2.0, state), "refused; nothing spent"
    assert admit(state, 102.0, burst=3, interval=2.0) == (0.0, state + 2.0)


async def join(ws: Any, name: str) -> None:
    await ws.send(f'{{"name": "{name}"}}')
    while await ws.receive() != '{"ready": true}':
        pass


async def test_two_tabs_on_one_ip_chat_quickly_without_refusal(
    default_runtime: td.Runtime, autojump_clock: trio.testing.MockClock
) -> None:
    """Both tabs of the quick start share 127.0.0.1: five quick messages each pass."""
    stub = default_runtime.namespace("rooms").get_by_name("lobby")
    headers = {"x-chat-client-ip": "127.0.0.1"}
    async with (
        open_websocket(stub, headers=headers) as ada,
        open_websocket(stub, headers=headers) as bob,
    ):
        await join(ada, "ada")
        await join(bob, "bob")
        assert await ada.receive() == '{"joined": "bob"}'
        for i in range(5):
            await ada.send(f'{{"message": "ada {i}"}}')
            await bob.send(f'{{"message": "bob {i}"}}')
        seen = [await ada.receive() for _ in range(10)]
        assert not [line for line in seen if "error" in line], seen


async def test_one_tab_too_fast_is_refused_without_hurting_the_other(
    default_runtime: td.Runtime, autojump_clock: trio.testing.MockClock
) -> None:
    stub = default_runtime.namespace("rooms").get_by_name("lobby")
    headers = {"x-chat-client-ip": "127.0.0.1"}
    async with (
        open_websocket(stub, headers=headers) as fast,
        open_websocket(stub, headers=headers) as calm,
    ):
        await join(fast, "fast")
        await join(calm, "calm")
        assert await fast.receive() == '{"joined": "calm"}'
        for i in range(7):
            await fast.send(f'{{"message": "m{i}"}}')
        replies = [json.loads(await fast.receive()) for _ in range(7)]
        assert [reply.get("error") for reply in replies] == [None] * 5 + [TOO_FAST] * 2
        assert [reply.get("refused") for reply in replies[5:]] == ["m5", "m6"], (
            "a refused message comes back so the page can restore it"
        )
        for _ in range(5):
            await calm.receive()  # fast's five messages
        await calm.send('{"message": "still fine"}')
        assert json.loads(await calm.receive())["message"] == "still fine", (
            "a connection's refusals spend nothing of its IP's budget"
        )
        assert json.loads(await fast.receive())["message"] == "still fine"
        await trio.sleep(1.0)
        await fast.send('{"message": "after a second"}')
        assert json.loads(await fast.receive())["message"] == "after a second"


async def test_the_ip_limit_still_holds_across_connections(
    default_runtime: td.Runtime, autojump_clock: trio.testing.MockClock
) -> None:
    """Many connections from one address: together at most the IP's burst (20)."""
    stub = default_runtime.namespace("rooms").get_by_name("lobby")
    headers = {"x-chat-client-ip": "192.0.2.66"}
    errors: list[str] = []
    async with trio.open_nursery() as nursery:
        for tab in range(5):

            async def flood(tab: int = tab) -> None:
                async with open_websocket(stub, headers=headers) as ws:
                    await join(ws, f"tab{tab}")
                    for i in range(5):
                        await ws.send(f'{{"message": "{tab}.{i}"}}')
                    while True:
                        with trio.move_on_after(5) as timeout:
                            reply = json.loads(await ws.receive())
                        if timeout.cancelled_caught:
                            return
                        if "error" in reply and reply.get("refused", "").startswith(f"{tab}."):
                            errors.append(reply["error"])

            nursery.start_soon(flood)
    assert errors == [RATE_LIMITED] * 5, "25 messages at once: the IP's 20 pass, 5 do not"


async def test_message_timestamps_follow_the_runtimes_clock(
    default_runtime: td.Runtime, autojump_clock: trio.testing.MockClock
) -> None:
    # The room reads ctx.now(), which moves with Trio's (here virtual) clock;
    # time.time() would put the two messages a few real milliseconds apart.
    stub = default_runtime.namespace("rooms").get_by_name("lobby")
    async with open_websocket(stub, headers={"x-chat-client-ip": "192.0.2.70"}) as ws:
        await join(ws, "ada")
        await ws.send('{"message": "before"}')
        first = json.loads(await ws.receive())["timestamp"]
        await trio.sleep(3600)
        await ws.send('{"message": "an hour later"}')
        second = json.loads(await ws.receive())["timestamp"]
    assert 3_600_000 <= second - first < 3_601_000, (first, second)
