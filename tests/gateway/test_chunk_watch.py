"""Sans-IO: ``ChunkSizeWatch`` follows a chunked body as h11 does, and refuses sizes early."""

from __future__ import annotations

import h11
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_durable._gateway._http1 import ChunkSizeWatch, HttpError

extensions = st.sampled_from([b"", b";a=b", b';name="v;x"', b";x"])


@st.composite
def chunked_bodies(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    """A valid chunked body (as h11 accepts it) and its chunk sizes."""
    sizes = draw(st.lists(st.integers(min_value=1, max_value=300), max_size=6))
    body = b""
    for size in sizes:
        digits = b"%x" % size
        if draw(st.booleans()):
            digits = digits.upper()
        body += b"0" * draw(st.integers(0, 3)) + digits + draw(extensions) + b"\r\n"
        body += draw(st.binary(min_size=size, max_size=size)) + b"\r\n"
    body += b"0" + draw(extensions) + b"\r\n"
    body += draw(st.sampled_from([b"", b"x-trailer: 1\r\n"])) + b"\r\n"
    return body, sizes


def feed_in_pieces(watch: ChunkSizeWatch, data: bytes, cuts: list[int]) -> None:
    last = 0
    for cut in [*sorted({min(cut, len(data)) for cut in cuts}), len(data)]:
        watch.feed(data[last:cut])
        last = cut


def h11_accepts(body: bytes) -> bytes:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    data = b""
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Data):
            data += event.data
        elif isinstance(event, h11.EndOfMessage):
            return data
        elif event is h11.NEED_DATA:
            raise AssertionError("h11 wants more")


@given(chunked=chunked_bodies(), cuts=st.lists(st.integers(min_value=0, max_value=3000)))
def test_a_body_within_the_limit_is_never_refused(
    chunked: tuple[bytes, list[int]], cuts: list[int]
) -> None:
    body, sizes = chunked
    assert len(h11_accepts(body)) == sum(sizes), "the strategy makes bodies h11 accepts"
    feed_in_pieces(ChunkSizeWatch(limit=max(sum(sizes), 1)), body, cuts)


@given(chunked=chunked_bodies(), cuts=st.lists(st.integers(min_value=0, max_value=3000)))
def test_a_body_over_the_limit_is_refused_at_the_size_line_that_crosses_it(
    chunked: tuple[bytes, list[int]], cuts: list[int]
) -> None:
    body, sizes = chunked
    if not sizes:
        return
    limit = sum(sizes) - 1
    crossing = body.index(b"\r\n", _size_line_offset(body, len(sizes) - 1))
    watch = ChunkSizeWatch(limit=limit)
    with pytest.raises(HttpError) as caught:
        feed_in_pieces(watch, body[: crossing + 1], cuts)
    assert caught.value.status == 413, caught.value
    assert f"{sum(sizes):,}" in caught.value.message, caught.value.message


def _size_line_offset(body: bytes, index: int) -> int:
    """Where the size line of chunk ``index`` starts."""
    at = 0
    for _ in range(index):
        line_end = body.index(b"\r\n", at)
        size = int(body[at:line_end].split(b";")[0], 16)
        at = line_end + 2 + size + 2
    return at


@pytest.mark.parametrize("digits", [b"8000000000000000", b"ffffffffffffffffff1", b"f" * 20])
def test_a_size_of_2_to_the_63_or_more_is_400(digits: bytes) -> None:
    with pytest.raises(HttpError) as caught:
        ChunkSizeWatch(limit=10**30).feed(digits + b"\r\n")
    assert caught.value.status == 400, caught.value


def test_the_size_is_judged_once_its_digits_end() -> None:
    watch = ChunkSizeWatch(limit=1000)
    watch.feed(b"3e")  # could still grow: nothing to say yet
    with pytest.raises(HttpError, match="1,001"):
        watch.feed(b"9;ext\r\n")


def test_after_the_last_chunk_nothing_is_followed() -> None:
    watch = ChunkSizeWatch(limit=10)
    watch.feed(b"0\r\n\r\nffffffffffffffffffff\r\n")  # a pipelined request's bytes, say


def test_a_size_whose_digits_so_far_are_too_large_is_refused_before_its_line_ends() -> None:
    watch = ChunkSizeWatch(limit=1000)
    with pytest.raises(HttpError) as caught:
        watch.feed(b"3e9")  # 1,001 already; more digits only make it larger
    assert caught.value.status == 413, caught.value


@pytest.mark.parametrize("digits", [b"f" * 30, b"0" * 21 + b"1", b"8" * 16])
def test_a_size_with_no_line_end_yet_is_refused_as_soon_as_it_cannot_be_valid(
    digits: bytes,
) -> None:
    # No CRLF follows: h11 would wait for one for as long as the client likes.
    with pytest.raises(HttpError) as caught:
        ChunkSizeWatch(limit=10**30).feed(digits)
    assert caught.value.status == 400, caught.value


@pytest.mark.parametrize(
    "body",
    [b"5\nhello\n0\n\n", b"5;ext\n", b"0\n\n", b"5\r\nhello\r\n0\n"],
    ids=["every line", "after an extension", "the last chunk", "the last chunk only"],
)
def test_a_size_line_ending_in_a_bare_lf_is_400(body: bytes) -> None:
    with pytest.raises(HttpError) as caught:
        ChunkSizeWatch(limit=1000).feed(body)
    assert caught.value.status == 400, caught.value
    assert "CRLF" in caught.value.message, caught.value.message


@given(cut=st.integers(min_value=0, max_value=20))
def test_a_crlf_split_between_reads_is_still_a_crlf(cut: int) -> None:
    body = b"5;x\r\nhello\r\n0\r\n\r\n"
    watch = ChunkSizeWatch(limit=1000)
    watch.feed(body[:cut])
    watch.feed(body[cut:])  # never refused
