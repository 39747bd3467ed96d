"""Random bytes and mutated handshakes never crash the gateway or disturb anyone else.

One server runs for the whole test, with a bystander WebSocket connected all
along. Hypothesis (in a worker thread, calling back into Trio) opens a fresh
connection per example, sends the bytes, closes its side and reads until the
server closes. Every example must get a well-formed answer (or none), and
after each one the bystander must still be echoed and a plain request served.
"""

from __future__ import annotations

import base64
import functools
import logging
from collections.abc import Awaitable, Callable

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.frames import Opcode

import trio_durable as td

from ..netkit import netapp
from ..netkit.netclient import RawWs, frame, raw_http

pytestmark = pytest.mark.usefixtures("close_clients")

StartServer = Callable[..., Awaitable[int]]

FUZZ_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)

KEY = base64.b64encode(b"0123456789abcdef").decode()
HANDSHAKE = [
    b"GET /rooms/fuzz HTTP/1.1",
    b"Host: 127.0.0.1",
    b"Upgrade: websocket",
    b"Connection: Upgrade",
    b"Sec-WebSocket-Key: " + KEY.encode(),
    b"Sec-WebSocket-Version: 13",
]
# Bytes that matter to an HTTP or WebSocket parser.
INTERESTING = st.sampled_from(
    [b"\r\n", b"\n", b"\r", b":", b" ", b"\x00", b"\xff", b"chunked", b"0", b"-1", b"99999999999"]
)


@st.composite
def mutated_handshakes(draw: st.DrawFn) -> bytes:
    lines = list(HANDSHAKE)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        kind = draw(
            st.sampled_from(["drop", "repeat", "replace", "insert", "case", "header", "version"])
        )
        index = draw(st.integers(min_value=0, max_value=len(lines) - 1))
        if kind == "drop" and len(lines) > 1:
            del lines[index]
        elif kind == "repeat":
            lines.insert(index, lines[index])
        elif kind == "replace":
            name = lines[index].partition(b":")[0]
            lines[index] = name + b": " + draw(st.binary(max_size=40) | INTERESTING)
        elif kind == "insert":
            at = draw(st.integers(min_value=0, max_value=len(lines[index])))
            piece = draw(st.binary(min_size=1, max_size=8) | INTERESTING)
            lines[index] = lines[index][:at] + piece + lines[index][at:]
        elif kind == "case":
            lines[index] = lines[index].swapcase()
        elif kind == "header":
            lines.insert(
                index + 1,
                draw(st.sampled_from([b"Content-Length", b"Transfer-Encoding", b"Expect"]))
                + b": "
                + draw(INTERESTING | st.sampled_from([b"100-continue", b"5", b"chunked"])),
            )
        else:
            lines[0] = draw(
                st.sampled_from(
                    [b"GET /rooms/fuzz HTTP/1.0", b"POST /rooms/fuzz HTTP/1.1", b"GET  HTTP/1.1"]
                )
            )
    head = b"\r\n".join(lines) + draw(st.sampled_from([b"\r\n\r\n", b"\n\n", b"\r\n", b""]))
    if draw(st.booleans()):
        head = head[: draw(st.integers(min_value=0, max_value=len(head)))]
    # What follows the head: nothing, garbage, or frames (some of them broken).
    tail = draw(
        st.just(b"")
        | st.binary(max_size=64)
        | st.builds(lambda text: frame(Opcode.TEXT, text), st.binary(max_size=32))
        | st.builds(
            lambda data, cut: frame(Opcode.BINARY, data)[:cut], st.binary(), st.integers(0, 20)
        )
    )
    return head + tail


def raw_frame(fin: bool, rsv: int, opcode: int, masked: bool, payload: bytes) -> bytes:
    """Any frame, valid or not: reserved bits, unknown opcodes, unmasked, long control frames."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    length = len(payload)
    if length < 126:
        header = bytes([first, (0x80 if masked else 0) | length])
    else:
        header = bytes([first, (0x80 if masked else 0) | 126]) + length.to_bytes(2, "big")
    if not masked:
        return header + payload
    mask = b"\x01\x02\x03\x04"
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


frames = st.lists(
    st.builds(
        raw_frame,
        fin=st.booleans(),
        rsv=st.integers(0, 7) | st.just(0),
        opcode=st.sampled_from([0, 1, 2, 8, 9, 10]) | st.integers(0, 15),
        masked=st.booleans() | st.just(True),
        payload=st.binary(max_size=200) | st.just("héllo".encode()),
    ),
    max_size=6,
).map(b"".join)


def well_formed(answer: bytes) -> bool:
    """No answer at all, or one that starts as HTTP/1.1 does."""
    return answer == b"" or answer.startswith(b"HTTP/1.1 ")


async def bystander_check(port: int, bystander: RawWs, round_: int) -> None:
    text = f"still here #{round_}"
    await bystander.send_text(text)
    assert await bystander.receive_text() == text, "the bystander was disturbed"
    answer = await raw_http(port, b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 "), answer


async def run_fuzz(
    start_server: StartServer,
    runtime: td.Runtime,
    caplog: pytest.LogCaptureFixture,
    inputs: st.SearchStrategy[bytes],
    answers_start_with: bytes = b"",
) -> int:
    port = await start_server(runtime, netapp.worker, handshake_timeout=1.0, max_body_bytes=4096)
    bystander = await RawWs.connect(port, "/rooms/bystander")
    rounds = 0

    @FUZZ_SETTINGS
    @given(data=inputs)
    def probe(data: bytes) -> None:
        nonlocal rounds
        rounds += 1
        answer = trio.from_thread.run(functools.partial(raw_http, port, data, within=3))
        assert well_formed(answer), answer[:200]
        assert answer.startswith(answers_start_with), answer[:200]
        trio.from_thread.run(bystander_check, port, bystander, rounds)

    with caplog.at_level(logging.WARNING, logger="trio_durable"):
        await trio.to_thread.run_sync(probe)
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert failures == [], [r.getMessage() for r in failures]
    return rounds


async def test_random_bytes_never_hurt_the_server(
    start_server: StartServer, echo_runtime: td.Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    inputs = st.binary(max_size=600) | st.lists(INTERESTING | st.binary(max_size=8)).map(b"".join)
    rounds = await run_fuzz(start_server, echo_runtime, caplog, inputs)
    assert rounds >= 100, rounds


async def test_mutated_handshakes_never_hurt_the_server(
    start_server: StartServer, echo_runtime: td.Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    rounds = await run_fuzz(start_server, echo_runtime, caplog, mutated_handshakes())
    assert rounds >= 100, rounds
    assert netapp.built, "some mutations still upgrade: the object was reached"


async def test_random_frames_after_a_valid_handshake_never_hurt_the_server(
    start_server: StartServer, echo_runtime: td.Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    head = b"\r\n".join(HANDSHAKE) + b"\r\n\r\n"
    inputs = st.tuples(frames, st.binary(max_size=16)).map(lambda parts: head + b"".join(parts))
    rounds = await run_fuzz(start_server, echo_runtime, caplog, inputs, b"HTTP/1.1 101 ")
    assert rounds >= 100, rounds
