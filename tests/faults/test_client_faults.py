"""Clients that misbehave on the wire: each is dealt with, nobody else notices.

Real sockets on 127.0.0.1; every time-out is a few tenths of a second. Each
test ends by checking that a well-behaved client, connected the whole time,
is still served.

The tests that measure a time-out (or count messages against a rate) run on
``autojump_clock``: loopback TCP moves the bytes inside the syscall, so Trio
only sees the whole run idle when everybody waits for a timer, and virtual
time then jumps to it. A time-out is then measured exactly, however loaded
the machine; with Trio's real clock these windows flaked.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing
from websockets.frames import Opcode

import trio_durable as td
from trio_durable._websocket._transport import DISCONNECTED_REASON

from ..netkit import netapp
from ..netkit.netclient import RawWs, frame, raw_http, upgrade_head
from ..polling import eventually

pytestmark = pytest.mark.usefixtures("close_clients")

StartServer = Callable[..., Awaitable[int]]


async def serve_echo(start_server: StartServer, runtime: td.Runtime, **options: object) -> int:
    return await start_server(runtime, netapp.worker, **options)


async def still_served(port: int, bystander: RawWs, text: str = "still here?") -> None:
    """The bystander's connection and a fresh HTTP request both still work."""
    await bystander.send_text(text)
    assert await bystander.receive_text() == text, "the bystander's echo came back"
    answer = await raw_http(port, b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 "), answer


# ------------------------------------------------------------- dropped / half


async def test_connection_dropped_mid_frame_gives_1006_to_the_object(
    start_server: StartServer, echo_runtime: td.Runtime
) -> None:
    port = await serve_echo(start_server, echo_runtime)
    bystander = await RawWs.connect(port, "/rooms/calm")
    client = await RawWs.connect(port, "/rooms/dropped")
    whole = frame(Opcode.TEXT, b"x" * 100)
    await client.send(whole[:20])  # the header and a few bytes of payload
    await client.aclose()
    await eventually(lambda: bool(netapp.seen.get("dropped")))
    assert netapp.seen["dropped"] == [("close", 1006, DISCONNECTED_REASON, False)], netapp.seen
    await still_served(port, bystander)


async def test_half_written_handshake_then_eof_never_touches_an_object(
    start_server: StartServer, echo_runtime: td.Runtime
) -> None:
    port = await serve_echo(start_server, echo_runtime)
    bystander = await RawWs.connect(port, "/rooms/calm")
    head = upgrade_head("/rooms/half")
    answer = await raw_http(port, head[: len(head) // 2])  # then EOF
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert b"peer unexpectedly closed" in answer, answer
    assert "half" not in netapp.built, "no object was activated"
    await still_served(port, bystander)


async def test_half_written_handshake_then_silence_is_dropped_after_the_timeout(
    start_server: StartServer, echo_runtime: td.Runtime, autojump_clock: trio.testing.MockClock
) -> None:
    port = await serve_echo(start_server, echo_runtime, handshake_timeout=0.3)
    bystander = await RawWs.connect(port, "/rooms/calm")
    silent = await trio.open_tcp_stream("127.0.0.1", port)
    head = upgrade_head("/rooms/silent")
    await silent.send_all(head[:30])
    start = trio.current_time()
    await still_served(port, bystander)  # served while the silent one waits
    with trio.fail_after(2):
        assert await silent.receive_some() == b"", "dropped without an answer"
    waited = trio.current_time() - start
    assert 0.2 < waited < 1.5, f"dropped after {waited:.2f} s; the timeout is 0.3 s"
    assert "silent" not in netapp.built
    await silent.aclose()


async def test_failed_upgrade_leaves_no_socket_in_the_object(
    start_server: StartServer, echo_runtime: td.Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    port = await serve_echo(start_server, echo_runtime)
    # A careless object answers a plain GET with a WebSocket: the gateway
    # refuses to send that 101, and must drop the socket the object accepted.
    with caplog.at_level(logging.ERROR, logger="trio_durable.gateway"):
        answer = await raw_http(port, b"GET /rooms/careless?careless=1 HTTP/1.1\r\nhost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 500 "), answer
    assert "not a WebSocket upgrade request" in caplog.text, caplog.text
    stub = echo_runtime.namespace("echo").get_by_name("careless")
    assert await stub.socket_count() == 0, "no phantom socket stays in the object"


# ------------------------------------------------------------ never reading


async def test_websocket_client_that_never_reads_is_disconnected(
    start_server: StartServer, echo_runtime: td.Runtime
) -> None:
    port = await serve_echo(start_server, echo_runtime, send_buffer_limit=32 * 1024)
    stuck_sock = socket.socket()
    stuck_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck_sock.connect(("127.0.0.1", port))
    stuck = RawWs(trio.SocketStream(trio.socket.from_stdlib_socket(stuck_sock)))
    await stuck.send(upgrade_head("/rooms/party"))
    assert (await stuck.read_head()).startswith(b"HTTP/1.1 101 ")
    reader = await RawWs.connect(port, "/rooms/party")
    # Each round the object sends 64 KiB to both sockets; the reader keeps up,
    # the stuck one reads nothing. The kernel buffers take up to 4 MiB on
    # Linux before the 32 KiB send buffer limit comes into play.

    def stuck_closed() -> bool:
        return any(event[0] == "close" for event in netapp.seen.get("party", []))

    rounds = 0
    while not stuck_closed():
        rounds += 1
        assert rounds <= 160, "10 MiB went to a client that reads nothing"
        await reader.send_text("blast 64")
        for _ in range(64):
            assert len(await reader.receive_text()) == 1024, "the reader gets every message"
    assert rounds > 4, "it took more than the send buffer to drop the stuck client"
    closes = [event for event in netapp.seen["party"] if event[0] == "close"]
    assert closes == [("close", 1006, DISCONNECTED_REASON, False)], closes
    await still_served(port, reader)
    await stuck.aclose()


async def test_http_client_that_never_reads_is_dropped_after_the_write_timeout(
    start_server: StartServer,
    echo_runtime: td.Runtime,
    caplog: pytest.LogCaptureFixture,
    autojump_clock: trio.testing.MockClock,
) -> None:
    port = await serve_echo(start_server, echo_runtime, max_connections=1, write_timeout=0.3)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")  # and never read the answer
    with caplog.at_level(logging.INFO, logger="trio_durable.gateway"):
        # While the stuck client holds the only connection, others are refused...
        busy = await raw_http(port, b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\n")
        assert busy.startswith(b"HTTP/1.1 503 "), busy
        start = trio.current_time()
        await eventually(lambda: "write timeout is 0.3 s" in caplog.text)
        waited = trio.current_time() - start
    assert waited < 1.5, f"the handler was freed after {waited:.2f} s"
    answer = await raw_http(port, b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 "), "the slot is free again"
    sock.close()


# ------------------------------------------------------------------- floods


async def test_flood_of_tiny_messages_closes_with_1008(
    start_server: StartServer, echo_runtime: td.Runtime, autojump_clock: trio.testing.MockClock
) -> None:
    port = await serve_echo(start_server, echo_runtime, max_messages_per_second=20)
    bystander = await RawWs.connect(port, "/rooms/calm")
    flooder = await RawWs.connect(port, "/rooms/flood")
    await flooder.send(b"".join(frame(Opcode.TEXT, b"%d" % i) for i in range(200)))
    code, reason = await flooder.receive_close()
    assert code == 1008, (code, reason)
    assert "20 messages per second" in reason, reason
    await eventually(lambda: ("error", 1008) in netapp.seen.get("flood", []))
    delivered = [event for event in netapp.seen["flood"] if event[0] == "message"]
    # The burst allowance is 20; a slow machine may refill a token meanwhile.
    assert 20 <= len(delivered) <= 22, f"{len(delivered)} messages got through"
    await still_served(port, bystander)


async def test_traffic_under_the_rate_limit_flows(
    start_server: StartServer, echo_runtime: td.Runtime
) -> None:
    port = await serve_echo(start_server, echo_runtime, max_messages_per_second=100)
    client = await RawWs.connect(port, "/rooms/steady")

    async def burst(count: int) -> None:
        await client.send(b"".join(frame(Opcode.TEXT, b"m%d" % i) for i in range(count)))
        for i in range(count):
            assert await client.receive_text() == f"m{i}"

    await burst(90)  # within the one-second allowance
    for _ in range(3):
        await trio.sleep(0.15)  # refills 15 tokens
        await burst(12)
    await client.send(frame(Opcode.PING, b"p"))
    assert await client.receive_frame() == (Opcode.PONG, b"p"), "126 messages, none refused"


# --------------------------------------------------------------- bad frames


async def test_huge_frame_closes_with_1009_before_it_is_buffered(
    start_server: StartServer, echo_runtime: td.Runtime
) -> None:
    port = await serve_echo(start_server, echo_runtime, max_message_size=1000)
    bystander = await RawWs.connect(port, "/rooms/calm")
    client = await RawWs.connect(port, "/rooms/huge")
    # Only the header of a 1 TiB frame: the limit is checked before any payload.
    header = bytes([0x82, 0xFF]) + struct.pack("!Q", 1 << 40) + b"\x00\x00\x00\x00"
    await client.send(header)
    code, reason = await client.receive_close()
    assert code == 1009 and "the limit is 1,000" in reason, (code, reason)
    await eventually(lambda: ("error", 1009) in netapp.seen.get("huge", []))
    await still_served(port, bystander)


async def test_message_over_the_limit_in_fragments_closes_with_1009(
    start_server: StartServer, echo_runtime: td.Runtime
) -> None:
    port = await serve_echo(start_server, echo_runtime, max_message_size=1000)
    client = await RawWs.connect(port, "/rooms/fragments")
    parts = [frame(Opcode.BINARY, b"a" * 400, fin=False)]
    parts += [frame(Opcode.CONT, b"a" * 400, fin=False) for _ in range(3)]
    await client.send(b"".join(parts))
    code, _reason = await client.receive_close()
    assert code == 1009, code


async def test_invalid_utf8_text_closes_with_1007(
    start_server: StartServer, echo_runtime: td.Runtime
) -> None:
    port = await serve_echo(start_server, echo_runtime)
    bystander = await RawWs.connect(port, "/rooms/calm")
    client = await RawWs.connect(port, "/rooms/mojibake")
    await client.send(frame(Opcode.TEXT, "café".encode("latin-1")))
    code, reason = await client.receive_close()
    assert code == 1007 and "invalid UTF-8" in reason, (code, reason)
    await eventually(lambda: ("error", 1007) in netapp.seen.get("mojibake", []))
    assert [e for e in netapp.seen["mojibake"] if e[0] == "message"] == [], "nothing delivered"
    await still_served(port, bystander)


async def test_invalid_utf8_split_across_fragments_closes_with_1007(
    start_server: StartServer, echo_runtime: td.Runtime
) -> None:
    port = await serve_echo(start_server, echo_runtime)
    client = await RawWs.connect(port, "/rooms/split")
    # A valid lead byte in one fragment, an invalid continuation in the next.
    await client.send(frame(Opcode.TEXT, b"ok \xe2\x82", fin=False))
    await client.send(frame(Opcode.CONT, b"\x41", fin=True))
    code, _reason = await client.receive_close()
    assert code == 1007, code


# ---------------------------------------------------------------- slowloris


async def test_half_a_frame_then_silence_closes_with_1008_after_the_frame_timeout(
    start_server: StartServer, echo_runtime: td.Runtime, autojump_clock: trio.testing.MockClock
) -> None:
    port = await serve_echo(start_server, echo_runtime, frame_timeout=0.3)
    bystander = await RawWs.connect(port, "/rooms/calm")
    client = await RawWs.connect(port, "/rooms/loris")
    start = trio.current_time()
    await client.send(frame(Opcode.TEXT, b"y" * 50)[:10])
    code, reason = await client.receive_close()
    waited = trio.current_time() - start
    assert code == 1008 and "the frame timeout is 0.3 s" in reason, (code, reason)
    assert 0.25 < waited < 1.5, f"closed after {waited:.2f} s; the frame timeout is 0.3 s"
    assert await client.receive_eof() == b"", "and the TCP connection is closed"
    await eventually(lambda: ("error", 1008) in netapp.seen.get("loris", []))
    await still_served(port, bystander)


async def test_silence_between_whole_frames_is_not_a_frame_timeout(
    start_server: StartServer, echo_runtime: td.Runtime
) -> None:
    port = await serve_echo(start_server, echo_runtime, frame_timeout=0.1, park_after=0.02)
    client = await RawWs.connect(port, "/rooms/patient")
    await client.send_text("one")
    assert await client.receive_text() == "one"
    await trio.sleep(0.3)  # idle between frames: parked, never timed out
    await client.send_text("two")
    assert await client.receive_text() == "two"
