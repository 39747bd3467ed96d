"""The transport's small parts on their own: the rate bucket and the send buffer.

Plain synchronous tests: the bucket takes the time as an argument, and the
buffer is flushed into one end of a local socket pair.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from trio_durable._websocket._rate import TokenBucket
from trio_durable._websocket._send_buffer import SendBuffer


def test_new_bucket_allows_a_burst_of_one_seconds_worth() -> None:
    bucket = TokenBucket(5.0, now=100.0)
    taken = [bucket.take(5.0, 100.0) for _ in range(6)]
    assert taken == [True] * 5 + [False], taken


def test_bucket_refills_at_the_rate() -> None:
    bucket = TokenBucket(5.0, now=0.0)
    for _ in range(5):
        bucket.take(5.0, 0.0)
    assert not bucket.take(5.0, 0.1), "half a token after 0.1 s"
    assert bucket.take(5.0, 0.2), "one token after 0.2 s"
    assert not bucket.take(5.0, 0.2)


def test_bucket_never_holds_more_than_one_second_worth() -> None:
    bucket = TokenBucket(2.0, now=0.0)
    taken = [bucket.take(2.0, 60.0) for _ in range(3)]
    assert taken == [True, True, False], "a minute of silence still allows only 2"


def test_bucket_is_full_only_once_refilled() -> None:
    bucket = TokenBucket(4.0, now=0.0)
    assert bucket.is_full(4.0, 0.0), "a new bucket is full"
    bucket.take(4.0, 0.0)
    assert not bucket.is_full(4.0, 0.1), "0.4 of 1 token refilled"
    assert bucket.is_full(4.0, 0.25), "refilled after 1/rate seconds"


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    try:
        yield ours, theirs
    finally:
        ours.close()
        theirs.close()


def test_buffer_counts_only_unsent_bytes() -> None:
    buffer = SendBuffer()
    buffer.append(b"abcdef", sent=2)
    buffer.append(b"gh")
    assert buffer.size == 6, buffer.size
    assert bytes(buffer.unfinished() or b"") == b"cdef", "the rest of the started frame"


def test_flush_sends_in_order_and_empties_the_buffer(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    buffer = SendBuffer()
    buffer.append(b"xxhello ", sent=2)
    buffer.append(b"world")
    buffer.flush(ours)
    assert theirs.recv(100) == b"hello world"
    assert (bool(buffer), buffer.size) == (False, 0), "everything went"


def test_flush_keeps_what_the_kernel_does_not_take(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    buffer = SendBuffer()
    frames = [bytes([n]) * 100_000 for n in range(3)]
    for frame in frames:
        buffer.append(frame)
    buffer.flush(ours)
    left = buffer.size
    assert 0 < left < 300_000, f"the kernel took part of it; {left:,} bytes left"
    received = b""
    while buffer:
        received += theirs.recv(1 << 20)
        buffer.flush(ours)
    while len(received) < 300_000:
        received += theirs.recv(1 << 20)
    assert received == b"".join(frames), "nothing lost, reordered or repeated"


def test_pop_all_returns_whole_frames_and_empties() -> None:
    buffer = SendBuffer()
    buffer.append(b"one")
    buffer.append(b"two")
    assert buffer.pop_all() == [b"one", b"two"]
    assert (bool(buffer), buffer.size) == (False, 0)
