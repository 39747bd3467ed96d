"""Pick the sans-IO WebSocket codec for the server role, with numbers.

Compares ``wsproto`` (``wsproto.connection.Connection`` built directly in the
OPEN state) against the sans-IO core of ``websockets``
(``websockets.protocol.Protocol`` with ``side=SERVER, state=OPEN``):

(a) parse N masked client text frames of 16 B, 1 KiB and 64 KiB fed in one
    buffer and emit an echo frame for each;
(b) serialize 64-byte text frames, as a broadcast does;
(c) the memory of one idle codec object (tracemalloc).

The last column measures ``trio_durable``'s own `FrameCodec`, the wrapper
built on the winner, to show what the wrapper costs on top of it.

Both libraries are driven the way ``trio_durable`` would drive them: text
arrives as ``str`` (so ``websockets`` pays for the UTF-8 decode that wsproto
does internally, and for the encode on the way out). The auto-replies
``websockets`` queues itself are drained so that its buffers do not grow.

Run ``python benchmarks/bench_codec.py`` (under a minute) or with ``--quick``.
The rule applied at the end: use ``websockets`` only if it is more than 1.3x
faster; otherwise keep ``wsproto``.
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import struct
import sys
import time
import tracemalloc
from collections.abc import Callable

import websockets.version
import wsproto
from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode as WsOpcode
from websockets.protocol import OPEN, Protocol, Side
from wsproto.connection import Connection, ConnectionType
from wsproto.events import TextMessage

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from trio_durable._websocket._frames import FrameCodec, serialize_message
from trio_durable._websocket._frames import TextMessage as CodecText

# Decision threshold from the design brief.
REQUIRED_SPEEDUP = 1.3


def masked_text_frame(payload: bytes) -> bytes:
    """Build one masked client text frame by hand (FIN set, no RSV bits).

    Built independently of both libraries so that neither gets a frame it
    produced itself.
    """
    mask = os.urandom(4)
    n = len(payload)
    if n <= 125:
        header = struct.pack("!BB", 0x81, 0x80 | n)
    elif n <= 0xFFFF:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


def best_of(repeats: int, run: Callable[[], int]) -> float:
    """Return the shortest wall time of ``repeats`` runs; ``run`` returns a check count."""
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


# --- (a) parse + echo -------------------------------------------------------


def wsproto_echo(buf: bytes, expected: int) -> int:
    """Feed ``buf`` to a fresh wsproto server connection and echo every message."""
    conn = Connection(ConnectionType.SERVER)
    conn.receive_data(buf)
    out = []
    for event in conn.events():
        if isinstance(event, TextMessage) and event.message_finished:
            out.append(conn.send(TextMessage(data=event.data)))
    assert len(out) == expected, (expected, len(out))
    return len(out)


def websockets_echo(buf: bytes, expected: int) -> int:
    """Feed ``buf`` to a fresh websockets server protocol and echo every message."""
    proto = Protocol(Side.SERVER, state=OPEN, max_size=None)
    proto.receive_data(buf)
    count = 0
    for frame in proto.events_received():
        if isinstance(frame, WsFrame) and frame.opcode is WsOpcode.TEXT and frame.fin:
            # Decode/encode as our wrapper would: handlers get str.
            text = bytes(frame.data).decode()
            proto.send_text(text.encode())
            count += 1
    out = proto.data_to_send()
    assert count == expected, (expected, count)
    assert len(out) == expected, (expected, len(out))
    return count


def ours_echo(buf: bytes, expected: int) -> int:
    """Feed ``buf`` to a fresh `FrameCodec` and echo every message."""
    codec = FrameCodec()
    out = [codec.send_text(e.data) for e in codec.receive(buf) if isinstance(e, CodecText)]
    assert len(out) == expected, (expected, len(out))
    return len(out)


# --- (b) serialize for broadcast --------------------------------------------


def wsproto_serialize(n: int, text: str) -> int:
    """Serialize ``n`` text frames with one wsproto connection."""
    conn = Connection(ConnectionType.SERVER)
    send = conn.send
    total = 0
    for _ in range(n):
        total += len(send(TextMessage(data=text)))
    return total


def websockets_serialize(n: int, text: str) -> int:
    """Serialize ``n`` text frames with one websockets protocol."""
    proto = Protocol(Side.SERVER, state=OPEN, max_size=None)
    total = 0
    for _ in range(n):
        proto.send_text(text.encode())
        for chunk in proto.data_to_send():
            total += len(chunk)
    return total


def ours_serialize(n: int, text: str) -> int:
    """Serialize ``n`` text frames with `serialize_message` (what a broadcast uses)."""
    total = 0
    for _ in range(n):
        total += len(serialize_message(text))
    return total


# --- (c) memory ---------------------------------------------------------------


def idle_bytes(factory: Callable[[], object], count: int = 1_000) -> tuple[float, int]:
    """Return (mean bytes per object over ``count``, bytes for a single object)."""
    factory()  # warm caches (loggers, enum lookups) outside the measurement
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    one = factory()
    single = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename"))
    del one
    gc.collect()
    base = tracemalloc.get_traced_memory()[0]
    keep = [factory() for _ in range(count)]
    per = (tracemalloc.get_traced_memory()[0] - base - sys.getsizeof(keep)) / count
    tracemalloc.stop()
    del keep
    return per, single


def main() -> None:
    """Run the benchmark and print the tables and the decision."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages, one repeat")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    repeats = 2 if args.quick else 5

    print(
        f"python {sys.version.split()[0]}  wsproto {wsproto.__version__}  "
        f"websockets {websockets.version.version}"
        f"{'  (--quick)' if args.quick else ''}\n"
    )
    rows: list[tuple[str, float, float]] = []
    ours: list[float] = []  # FrameCodec, the wrapper built on the winner

    for size, n in ((16, 50_000), (1024, 20_000), (64 * 1024, 300)):
        n //= scale
        payload = (b"abcdefgh" * (size // 8 + 1))[:size]
        buf = b"".join(masked_text_frame(payload) for _ in range(n))
        t_wp = best_of(repeats, functools.partial(wsproto_echo, buf, n))
        t_ws = best_of(repeats, functools.partial(websockets_echo, buf, n))
        t_ours = best_of(repeats, functools.partial(ours_echo, buf, n))
        ours.append(n / t_ours)
        label = f"parse+echo {size // 1024} KiB" if size >= 1024 else f"parse+echo {size} B"
        rows.append((label, n / t_wp, n / t_ws))

    n = 100_000 // scale
    text = "x" * 64
    t_wp = best_of(repeats, lambda: wsproto_serialize(n, text))
    t_ws = best_of(repeats, lambda: websockets_serialize(n, text))
    t_ours = best_of(repeats, lambda: ours_serialize(n, text))
    ours.append(n / t_ours)
    rows.append(("serialize 64 B text", n / t_wp, n / t_ws))

    print(
        f"{'case':<22}{'wsproto msg/s':>16}{'websockets msg/s':>19}{'ws/wsproto':>12}"
        f"{'FrameCodec msg/s':>19}"
    )
    print("-" * 88)
    for (label, wp, ws), mine in zip(rows, ours, strict=True):
        print(f"{label:<22}{wp:>16,.0f}{ws:>19,.0f}{ws / wp:>11.2f}x{mine:>19,.0f}")

    wp_per, wp_one = idle_bytes(lambda: Connection(ConnectionType.SERVER))
    ws_per, ws_one = idle_bytes(lambda: Protocol(Side.SERVER, state=OPEN, max_size=None))
    fc_per, fc_one = idle_bytes(FrameCodec)
    print(f"\n{'idle codec object':<22}{'one (bytes)':>16}{'mean of 1,000':>19}")
    print("-" * 57)
    print(f"{'wsproto Connection':<22}{wp_one:>16,}{wp_per:>19,.0f}")
    print(f"{'websockets Protocol':<22}{ws_one:>16,}{ws_per:>19,.0f}")
    print(f"{'FrameCodec (ours)':<22}{fc_one:>16,}{fc_per:>19,.0f}")

    ratios = [ws / wp for _, wp, ws in rows]
    geo = 1.0
    for r in ratios:
        geo *= r
    geo **= 1 / len(ratios)
    choice = "websockets" if geo > REQUIRED_SPEEDUP else "wsproto"
    print(
        f"\ngeometric mean speed-up of websockets over wsproto: {geo:.2f}x "
        f"(threshold {REQUIRED_SPEEDUP}x) -> use {choice}"
    )


if __name__ == "__main__":
    main()
