"""The chat protocol over real sockets, with the ``websockets`` library as the client."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from examples.chat import ChatConfig
from examples.chat.server import RATE_LIMITED
from trio_durable.testing import evict

from .conftest import ChatServer, StartChat
from .helpers import ChatClient, in_thread


async def http(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    def call() -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
        try:
            with urllib.request.urlopen(request, timeout=3) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            with error:
                return error.code, dict(error.headers), error.read()

    result: tuple[int, dict[str, str], bytes] = await in_thread(call)
    return result


async def member(chat: ChatServer, name: str, room: str = "lobby") -> ChatClient:
    client = await ChatClient.connect(chat.port, room)
    await client.join(name)
    return client


# ----------------------------------------------------------------- routes


async def test_root_serves_the_page(chat: ChatServer) -> None:
    status, headers, body = await http(chat.port, "/")
    assert status == 200, status
    assert headers["content-type"] == "text/html; charset=utf-8", headers
    assert b"<title>Chat" in body and b"/static/chat.js" in body


async def test_page_assets_are_served_and_others_are_not(chat: ChatServer) -> None:
    status, headers, _ = await http(chat.port, "/static/chat.js")
    assert (status, headers["content-type"]) == (200, "text/javascript; charset=utf-8")
    assert (await http(chat.port, "/static/../server.py"))[0] == 404
    assert (await http(chat.port, "/nowhere"))[0] == 404


async def test_post_room_returns_a_new_private_room_id(chat: ChatServer) -> None:
    status, headers, body = await http(chat.port, "/api/room", "POST")
    first = body.decode()
    assert status == 200 and headers["content-type"].startswith("text/plain"), (status, headers)
    assert len(first) == 64 and int(first, 16) >= 0, first
    second = (await http(chat.port, "/api/room", "POST"))[2].decode()
    assert first != second, "every POST makes a new room"
    assert (await http(chat.port, "/api/room"))[0] == 405


async def test_private_room_by_id_works(chat: ChatServer) -> None:
    room_id = (await http(chat.port, "/api/room", "POST"))[2].decode()
    client = await ChatClient.connect(chat.port, room_id)
    assert await client.join("ada") == [{"joined": "ada"}]
    await client.close()


async def test_forged_private_room_id_is_404(chat: ChatServer) -> None:
    status, _, _ = await http(chat.port, "/api/room/" + "ab" * 32 + "/websocket")
    assert status == 404, status
    with pytest.raises(InvalidStatus, match="404"):
        await ChatClient.connect(chat.port, "ab" * 32)


async def test_room_name_over_32_characters_is_404_for_upgrades_too(chat: ChatServer) -> None:
    assert (await http(chat.port, "/api/room/" + "x" * 33 + "/websocket"))[0] == 404
    with pytest.raises(InvalidStatus, match="404"):
        await ChatClient.connect(chat.port, "x" * 33)
    client = await ChatClient.connect(chat.port, "x" * 32)  # 32 is fine
    await client.close()


async def test_room_route_without_upgrade_is_426(chat: ChatServer) -> None:
    assert (await http(chat.port, "/api/room/lobby/websocket"))[0] == 426


# --------------------------------------------------------------- protocol


async def test_join_announces_members_then_ready(chat: ChatServer) -> None:
    ada = await ChatClient.connect(chat.port)
    assert await ada.join("ada") == [{"joined": "ada"}], "the newcomer hears its own join"
    bob = await ChatClient.connect(chat.port)
    assert await bob.join("bob") == [{"joined": "ada"}, {"joined": "bob"}], (
        "present members first, then the broadcast of the newcomer"
    )
    assert await ada.receive() == {"joined": "bob"}
    await ada.close()
    await bob.close()


async def test_members_of_other_rooms_are_not_seen(chat: ChatServer) -> None:
    ada = await member(chat, "ada", "one")
    bob = await ChatClient.connect(chat.port, "two")
    assert await bob.join("bob") == [{"joined": "bob"}]
    await ada.say("only for room one")
    assert (await ada.receive())["message"] == "only for room one"
    await bob.say("only for room two")
    assert (await bob.receive())["message"] == "only for room two", "room two got room one's line"


async def test_message_is_broadcast_with_name_and_increasing_timestamps(
    chat: ChatServer,
) -> None:
    ada = await member(chat, "ada")
    bob = await member(chat, "bob")
    assert await ada.receive() == {"joined": "bob"}
    for i in range(5):
        await ada.say(f"line {i}")
    for client in (ada, bob):
        got = [await client.receive() for _ in range(5)]
        assert [(m["name"], m["message"]) for m in got] == [("ada", f"line {i}") for i in range(5)]
        stamps = [m["timestamp"] for m in got]
        assert all(isinstance(s, int) for s in stamps), stamps
        assert stamps == sorted(set(stamps)), f"timestamps must strictly increase: {stamps}"


async def test_newcomer_gets_the_last_100_messages_before_ready(chat: ChatServer) -> None:
    ada = await member(chat, "ada")
    for i in range(105):
        await ada.say(f"m{i}")
    for _ in range(105):
        await ada.receive()
    bob = await ChatClient.connect(chat.port)
    backlog = await bob.join("bob")
    assert backlog[0] == {"joined": "ada"}, backlog[:2]
    assert backlog[-1] == {"joined": "bob"}, backlog[-2:]
    lines = [m["message"] for m in backlog[1:-1]]
    assert lines == [f"m{i}" for i in range(5, 105)], "the last 100, oldest first"


async def test_name_over_32_characters_is_an_error_and_closes_1009(chat: ChatServer) -> None:
    client = await ChatClient.connect(chat.port)
    await client.send({"name": "n" * 33})
    assert await client.receive() == {"error": "Name too long."}
    with pytest.raises(ConnectionClosed):
        await client.receive()
    assert client.connection.close_code == 1009, client.connection.close_code


async def test_message_over_256_characters_is_an_error(chat: ChatServer) -> None:
    ada = await member(chat, "ada")
    await ada.say("x" * 257)
    assert await ada.receive() == {"error": "Message too long.", "refused": "x" * 257}
    await ada.say("y" * 256)
    got = await ada.receive()
    assert got["message"] == "y" * 256, "the socket lives on and 256 characters pass"


async def test_not_json_is_an_error(chat: ChatServer) -> None:
    ada = await ChatClient.connect(chat.port)
    await in_thread(ada.connection.send, "hello?")
    assert await ada.receive() == {"error": "Expected a JSON object."}


async def test_rate_limit_sends_an_error_and_drops_the_message(start_chat: StartChat) -> None:
    chat = await start_chat(ChatConfig(rate_burst=2, rate_interval=60))
    ada = await member(chat, "ada")
    bob = await member(chat, "bob")
    await ada.receive()  # bob joined
    for text in ("one", "two", "three"):
        await ada.say(text)
    assert [(await ada.receive()).get("message") for _ in range(2)] == ["one", "two"]
    assert await ada.receive() == {"error": RATE_LIMITED, "refused": "three"}
    assert [(await bob.receive())["message"] for _ in range(2)] == ["one", "two"]
    await bob.say("same IP, same limiter")
    assert await bob.receive() == {"error": RATE_LIMITED, "refused": "same IP, same limiter"}, (
        "the limiter is keyed by IP"
    )
    carol = await ChatClient.connect(chat.port)
    backlog = await carol.join("carol")
    stored = [m["message"] for m in backlog if "message" in m]
    assert stored == ["one", "two"], "a rate-limited message is neither sent nor stored"


async def test_close_broadcasts_quit(chat: ChatServer) -> None:
    ada = await member(chat, "ada")
    bob = await member(chat, "bob")
    assert await ada.receive() == {"joined": "bob"}
    await bob.close()
    assert await ada.receive() == {"quit": "bob"}


async def test_dropped_connection_broadcasts_quit(chat: ChatServer) -> None:
    ada = await member(chat, "ada")
    bob = await member(chat, "bob")
    assert await ada.receive() == {"joined": "bob"}
    await bob.drop()
    assert await ada.receive() == {"quit": "bob"}


async def test_leaving_before_joining_is_silent(chat: ChatServer) -> None:
    ada = await member(chat, "ada")
    lurker = await ChatClient.connect(chat.port)
    await lurker.close()
    await ada.say("still here")
    assert (await ada.receive())["message"] == "still here", "no quit for a nameless socket"


async def test_whole_flow_after_the_room_hibernated(chat: ChatServer) -> None:
    ada = await member(chat, "ada")
    bob = await member(chat, "bob")
    assert await ada.receive() == {"joined": "bob"}
    await ada.say("before")
    before = (await ada.receive())["timestamp"]
    await bob.receive()
    activations = chat.runtime.statistics().activations

    assert await evict(chat.room("lobby")), "the room was live and is now evicted"
    assert chat.runtime.statistics().evictions == 1

    await bob.say("after")
    for client in (ada, bob):
        got = await client.receive()
        assert (got["name"], got["message"]) == ("bob", "after"), got
        assert got["timestamp"] > before, "timestamps keep increasing across hibernation"
    assert chat.runtime.statistics().activations == activations + 1, (
        "the message re-created the room (its constructor ran again)"
    )

    carol = await ChatClient.connect(chat.port)
    assert await carol.join("carol") == [
        {"joined": "ada"},
        {"joined": "bob"},
        {"name": "ada", "message": "before", "timestamp": before},
        {"name": "bob", "message": "after", "timestamp": got["timestamp"]},
        {"joined": "carol"},
    ], "the session table was rebuilt from the sockets' attachments"
    for client in (ada, bob):
        assert await client.receive() == {"joined": "carol"}

    await evict(chat.room("lobby"))
    await bob.close()
    for client in (ada, carol):
        assert await client.receive() == {"quit": "bob"}, "names come back from attachments"
    await evict(chat.room("lobby"))
    await ada.say("x" * 300)
    assert await ada.receive() == {"error": "Message too long.", "refused": "x" * 300}
