"""The Hibernation API through the in-memory client."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import trio_durable as td
from trio_durable._websocket._socket import socket_transport
from trio_durable.testing import evict, open_websocket, run_in_object

from .objects import Member, Room, constructed, events

DISCONNECTED = "WebSocket disconnected without sending Close frame."


def room(runtime: td.Runtime, name: str = "r") -> td.Stub:
    return runtime.namespace("rooms").get_by_name(name)


async def hibernate(runtime: td.Runtime) -> None:
    await trio.sleep(10)
    await trio.testing.wait_all_tasks_blocked()
    assert runtime.statistics().live_objects == 0, "the object should have hibernated"


async def test_message_round_trip_text_and_binary(runtime: td.Runtime) -> None:
    async with open_websocket(room(runtime)) as ws:
        await ws.send("hello")
        assert await ws.receive() == "hello"
        await ws.send(b"\x00\xff")
        assert await ws.receive() == b"\x00\xff", "binary frames arrive as bytes"


async def test_object_hibernates_and_wakes_with_sockets_tags_and_attachments_intact(
    runtime: td.Runtime, autojump_clock: trio.testing.MockClock
) -> None:
    stub = room(runtime)
    async with (
        open_websocket(stub, "http://t/?name=ann&tags=room,a") as ann,
        open_websocket(stub, "http://t/?name=bob&tags=room,b") as bob,
    ):
        await ann.send("whoami")
        assert await ann.receive() == "ann seen=1 tags=['room', 'a']"
        await hibernate(runtime)
        assert constructed["Room"] == 1
        await bob.send("whoami")
        assert await bob.receive() == "bob seen=1 tags=['room', 'b']", (
            "the new instance starts with defaults but the socket kept tags and attachment"
        )
        assert constructed["Room"] == 2, "the message re-created the object"
        assert await stub.count() == 2, "get_websockets() sees both sockets after waking"
        assert await stub.count("a") == 1


async def test_get_websockets_in_post_init_sees_all_sockets(
    runtime_factory, autojump_clock: trio.testing.MockClock
) -> None:  # type: ignore[no-untyped-def]
    import attrs

    seen_at_init: list[int] = []

    @attrs.define(eq=False)
    class Counting(Room):
        def __attrs_post_init__(self) -> None:
            seen_at_init.append(len(self.ctx.get_websockets()))

    async with runtime_factory(objects={"rooms": Counting}) as rt:
        stub = rt.namespace("rooms").get_by_name("r")
        async with open_websocket(stub) as a, open_websocket(stub) as b:
            await hibernate(rt)
            await a.send("x")
            assert await a.receive() == "x"
            del b
    assert seen_at_init == [0, 2], f"the woken constructor sees both sockets: {seen_at_init}"


async def test_broadcast_to_hibernated_sockets_does_not_wake_the_object(
    runtime: td.Runtime, autojump_clock: trio.testing.MockClock
) -> None:
    stub = room(runtime)
    async with open_websocket(stub) as a, open_websocket(stub) as b:
        sockets = await run_in_object(stub, _get_sockets)
        await hibernate(runtime)
        for ws in sockets:
            await ws.send("from outside")
        assert [await a.receive(), await b.receive()] == ["from outside"] * 2
        assert constructed["Room"] == 1, "sending to hibernated sockets must not wake the object"


async def _get_sockets(instance: Room, ctx: td.ObjectContext) -> list[td.WebSocket]:
    return ctx.get_websockets()


async def test_auto_response_does_not_wake_and_records_timestamp(
    runtime: td.Runtime, autojump_clock: trio.testing.MockClock
) -> None:
    stub = room(runtime)
    await stub.set_auto("ping", "pong")
    async with open_websocket(stub) as ws:
        await hibernate(runtime)
        before = runtime.wall_time()
        await ws.send("ping")
        assert await ws.receive() == "pong"
        assert constructed["Room"] == 1, "an auto-response must not wake the object"
        await ws.send(b"ping")
        assert await ws.receive() == b"ping", "only a text frame matches; binary is echoed"
        pair, stamps = await stub.auto_info()
    assert pair == td.WebSocketRequestResponsePair("ping", "pong")
    assert stamps[0] is not None and stamps[0] >= before, f"timestamp recorded: {stamps}"


async def test_auto_response_none_clears_it(runtime: td.Runtime) -> None:
    stub = room(runtime)
    await stub.set_auto("ping", "pong")
    await stub.set_auto(None)
    async with open_websocket(stub) as ws:
        await ws.send("ping")
        assert await ws.receive() == "ping", "after clearing, the handler echoes"
    assert (await stub.auto_info())[0] is None


@pytest.mark.parametrize(
    ("request_text", "response_text", "error", "match"),
    [
        ("x" * 2049, "y", td.LimitExceededError, "request is 2,049 bytes; the limit is 2,048"),
        ("x", "é" * 1025, td.LimitExceededError, "response is 2,050 bytes; the limit is 2,048"),
        (b"x", "y", TypeError, "request must be a str"),
        ("", "y", ValueError, "must not be empty"),
    ],
)
def test_auto_response_pair_limits(request_text, response_text, error, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=match):
        td.WebSocketRequestResponsePair(request_text, response_text)


async def test_peer_close_gives_websocket_close_with_code_and_reason(
    runtime: td.Runtime, autojump_clock: trio.testing.MockClock
) -> None:
    stub = room(runtime)
    async with open_websocket(stub) as ws:
        await hibernate(runtime)
        await ws.close(4001, "bye")
        await trio.testing.wait_all_tasks_blocked()
        assert ws.ready_state == td.WebSocket.CLOSED
    assert events == [("close", 4001, "bye", True)], events
    assert constructed["Room"] == 2, "a close wakes a hibernated object"
    assert await stub.count() == 0, "a closed socket leaves get_websockets()"


async def test_dropped_connection_gives_1006_with_standard_reason(runtime: td.Runtime) -> None:
    stub = room(runtime)
    async with open_websocket(stub) as ws:
        transport = socket_transport(ws)
        assert transport is not None
        transport.abort()  # the peer vanishes
        await trio.testing.wait_all_tasks_blocked()
    assert events == [("close", 1006, DISCONNECTED, False)], events


async def test_server_close_reaches_client(runtime: td.Runtime) -> None:
    async with open_websocket(room(runtime)) as ws:
        await ws.send("close 4000 done here")
        with pytest.raises(td.WebSocketClosedError) as info:
            await ws.receive()
    assert (info.value.code, info.value.reason) == (4000, "done here")


@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 5000])
async def test_reserved_close_codes_are_refused(code: int) -> None:
    client, server = td.WebSocketPair()
    with pytest.raises(ValueError, match=str(code)):
        await server.close(code)


async def test_close_reason_over_123_bytes_is_refused() -> None:
    client, server = td.WebSocketPair()
    with pytest.raises(ValueError, match="124 bytes; the limit is 123"):
        await server.close(1000, "x" * 124)


async def test_messages_sent_before_eviction_are_delivered_in_order(
    runtime: td.Runtime, autojump_clock: trio.testing.MockClock
) -> None:
    stub = room(runtime)
    async with open_websocket(stub) as ws:
        await ws.send("burst")
        await evict(stub)
        received = [await ws.receive() for _ in range(100)]
    assert received == [f"burst {n}" for n in range(100)]


async def test_100_messages_5_rounds_in_order_across_forced_evictions(
    runtime: td.Runtime, autojump_clock: trio.testing.MockClock
) -> None:
    stub = room(runtime)
    async with open_websocket(stub) as ws:
        for round_ in range(5):
            for n in range(100):
                await ws.send(f"{round_}:{n}")
            echoes = [await ws.receive() for _ in range(100)]
            assert echoes == [f"{round_}:{n}" for n in range(100)], f"round {round_} reordered"
            assert await evict(stub) is True
    assert constructed["Room"] == 5, "each round ran on a fresh instance"


async def test_event_timeout_resets_the_object(
    runtime: td.Runtime, autojump_clock: trio.testing.MockClock
) -> None:
    stub = room(runtime)
    assert await stub.set_timeout(2.5) == 2.5
    async with open_websocket(stub) as ws:
        await ws.send("sleep 1")
        assert await ws.receive() == "woke", "a handler under the timeout finishes"
        await ws.send("sleep 5")
        await trio.sleep(3)
        await trio.testing.wait_all_tasks_blocked()
        assert runtime.statistics().resets == 1, "a handler over the timeout resets the object"
        await ws.send("whoami-free echo")
        assert await ws.receive() == "whoami-free echo", "the socket survives the reset"


async def test_event_timeout_bad_values(runtime: td.Runtime) -> None:
    stub = room(runtime)
    # The one check of every "seconds" option names it.
    with pytest.raises(ValueError, match="the event timeout must be a positive, finite"):
        await stub.set_timeout(0)
    with pytest.raises(ValueError, match="the event timeout"):
        await stub.set_timeout(float("inf"))
    with pytest.raises(TypeError, match="number of seconds"):
        await stub.set_timeout("1")  # type: ignore[arg-type]
    assert await stub.set_timeout(None) is None


async def test_abort_disconnects_all_sockets_even_hibernated_ones(
    runtime: td.Runtime, autojump_clock: trio.testing.MockClock
) -> None:
    stub = room(runtime)
    async with open_websocket(stub) as a, open_websocket(stub) as b:
        await a.send("abort")
        await trio.testing.wait_all_tasks_blocked()
        for ws in (a, b):
            with pytest.raises(td.WebSocketClosedError) as info:
                await ws.receive()
            assert info.value.code == 1006
    assert await stub.count() == 0
    assert events == [], "the aborted object is not told about its own sockets"


async def test_evict_with_close_websockets_closes_them_going_away(
    runtime: td.Runtime, autojump_clock: trio.testing.MockClock
) -> None:
    stub = room(runtime)
    async with open_websocket(stub) as ws:
        await evict(stub, close_websockets=True)
        with pytest.raises(td.WebSocketClosedError) as info:
            await ws.receive()
    assert info.value.code == 1001


async def test_tags_limits_and_duplicates(runtime: td.Runtime) -> None:
    stub = room(runtime)
    tags11 = ",".join(f"t{n}" for n in range(11))
    with pytest.raises(td.LimitExceededError, match="11 tags given; the limit is 10"):
        await stub.fetch(td.Request(url=f"http://t/?tags={tags11}"))
    with pytest.raises(td.LimitExceededError, match="257 bytes; the limit is 256"):
        await stub.fetch(td.Request(url=f"http://t/?tags={'x' * 257}"))
    async with open_websocket(stub, "http://t/?name=a&tags=room,room,x,x") as ws:
        await ws.send("whoami")
        assert await ws.receive() == "a seen=1 tags=['room', 'x']", "duplicates are dropped"


async def test_accept_errors(runtime: td.Runtime) -> None:
    async def try_accept(instance: Room, ctx: td.ObjectContext) -> None:
        client, server = td.WebSocketPair()
        with pytest.raises(TypeError, match="server end"):
            ctx.accept_websocket(client)
        with pytest.raises(TypeError, match="tags must be a list of str, not a single str"):
            ctx.accept_websocket(server, tags="room")
        with pytest.raises(TypeError, match="each tag must be a str"):
            ctx.accept_websocket(server, tags=[1])
        ctx.accept_websocket(server)
        with pytest.raises(RuntimeError, match="already accepted"):
            ctx.accept_websocket(server)
        with pytest.raises(RuntimeError, match="already accepted"):
            server.accept()

    await run_in_object(room(runtime), try_accept)


async def test_max_sockets_per_object_is_enforced(runtime_factory) -> None:  # type: ignore[no-untyped-def]
    async with runtime_factory(objects={"rooms": Room}, max_websockets_per_object=2) as rt:
        stub = rt.namespace("rooms").get_by_name("r")
        async with open_websocket(stub), open_websocket(stub):
            with pytest.raises(
                td.LimitExceededError, match="2 hibernatable WebSockets; the limit is 2"
            ):
                await stub.fetch(td.Request())


async def test_attachment_limit_none_and_fresh_copies(runtime_factory) -> None:  # type: ignore[no-untyped-def]
    async with runtime_factory(objects={"rooms": Room}, max_attachment_bytes=100) as rt:

        async def check(instance: Room, ctx: td.ObjectContext) -> None:
            client, server = td.WebSocketPair()
            assert server.deserialize_attachment() is None, "nothing stored yet"
            with pytest.raises(
                td.LimitExceededError,
                match=r"attachment is 1\d\d bytes serialized; the limit is 100",
            ):
                server.serialize_attachment({"x": "y" * 100})
            server.serialize_attachment({"names": ["a"]})
            first = server.deserialize_attachment()
            first["names"].append("b")
            assert server.deserialize_attachment() == {"names": ["a"]}, "a fresh copy each call"
            server.serialize_attachment(Member("ann", 3))
            assert server.deserialize_attachment(Member) == Member("ann", 3)
            with pytest.raises(TypeError, match=r"attachment is an object of class builtins"):
                server.serialize_attachment(object())
            server.serialize_attachment(None)
            assert server.deserialize_attachment() is None, "None clears the attachment"

        await run_in_object(rt.namespace("rooms").get_by_name("r"), check)


async def test_send_rejects_other_types(runtime: td.Runtime) -> None:
    async with open_websocket(room(runtime)) as ws:
        with pytest.raises(TypeError, match="str \\(text\\) or bytes \\(binary\\), got int"):
            await ws.send(5)  # type: ignore[arg-type]


async def test_send_after_close_raises(runtime: td.Runtime) -> None:
    async with open_websocket(room(runtime)) as ws:
        await ws.close()
        with pytest.raises(trio.ClosedResourceError):
            await ws.send("late")


async def test_returning_an_unaccepted_pair_is_refused_by_the_client(runtime_factory) -> None:  # type: ignore[no-untyped-def]
    import attrs

    @attrs.define(eq=False)
    class Forgetful(td.DurableObject):
        async def fetch(self, request: td.Request) -> td.Response:
            client, server = td.WebSocketPair()
            return td.Response.websocket(client)

    async with runtime_factory(objects={"f": Forgetful}) as rt:
        with pytest.raises(RuntimeError, match="WebSocketPair was never accepted"):
            async with open_websocket(rt.namespace("f").get_by_name("x")):
                pass


async def test_refused_upgrade_reports_status(runtime: td.Runtime) -> None:
    async def not_found(request: td.Request) -> td.Response:
        return td.Response.text("nope", status=404)

    with pytest.raises(RuntimeError, match="refused: HTTP 404"):
        async with open_websocket(not_found):
            pass


async def test_standard_api_pins_the_object_until_closed(
    runtime: td.Runtime, autojump_clock: trio.testing.MockClock
) -> None:
    stub = runtime.namespace("standard").get_by_name("s")
    async with open_websocket(stub) as ws:
        await ws.send("one")
        assert await ws.receive() == "got one"
        await trio.sleep(60)
        assert runtime.statistics().live_objects == 1, "an open standard socket pins the object"
        await ws.send("two")
        assert await ws.receive() == "got two"
        assert await stub.log() == ["one", "two"]
    await trio.sleep(10.5)
    await trio.testing.wait_all_tasks_blocked()
    assert runtime.statistics().live_objects == 0, "after close the object hibernates"


async def test_closing_socket_is_gone_from_get_websockets_but_keeps_its_attachment(
    runtime_factory, autojump_clock: trio.testing.MockClock
) -> None:  # type: ignore[no-untyped-def]
    import attrs

    seen: list[tuple[int, str, int]] = []

    @attrs.define(eq=False)
    class Leaving(Room):
        async def websocket_close(
            self, ws: td.WebSocket, code: int, reason: str, was_clean: bool
        ) -> None:
            member = ws.deserialize_attachment(Member)
            seen.append((len(self.ctx.get_websockets()), member.name, ws.ready_state))

    async with runtime_factory(objects={"rooms": Leaving}) as rt:
        stub = rt.namespace("rooms").get_by_name("r")
        async with open_websocket(stub, "http://t/?name=stay"):
            async with open_websocket(stub, "http://t/?name=leaver"):
                await hibernate(rt)
            await trio.testing.wait_all_tasks_blocked()
    assert seen[0] == (1, "leaver", td.WebSocket.CLOSED), seen
