"""Synchronous tests of the sans-IO server frame codec.

Client frames are built by hand (`client_frame`) so that invalid ones can be
made, and with wsproto's client role as an independent implementation.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Sequence

import pytest
import trio
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage as WpBytes
from wsproto.events import CloseConnection as WpClose
from wsproto.events import TextMessage as WpText

from trio_durable._exceptions import LimitExceededError
from trio_durable._websocket._frames import (
    BinaryMessage,
    CloseReceived,
    ConnectionLost,
    FrameCodec,
    Ping,
    Pong,
    ProtocolFailure,
    TextMessage,
    accept_key,
    serialize_close,
    serialize_message,
    validate_close,
)

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


def client_frame(
    opcode: int, payload: bytes = b"", *, fin: bool = True, mask: bool = True, rsv: int = 0
) -> bytes:
    """Build one client frame by hand; masked unless told otherwise."""
    head1 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    mask_bit = 0x80 if mask else 0
    if n <= 125:
        header = struct.pack("!BB", head1, mask_bit | n)
    elif n <= 0xFFFF:
        header = struct.pack("!BBH", head1, mask_bit | 126, n)
    else:
        header = struct.pack("!BBQ", head1, mask_bit | 127, n)
    if not mask:
        return header + payload
    key = os.urandom(4)
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


def wsproto_client() -> Connection:
    return Connection(ConnectionType.CLIENT)


def failure_code(events: Sequence[object]) -> int:
    assert len(events) >= 1, "expected at least one event"
    last = events[-1]
    assert isinstance(last, ProtocolFailure), f"expected a ProtocolFailure, got {events!r}"
    return last.code


# --- whole messages -----------------------------------------------------------


def test_text_frame_from_wsproto_client() -> None:
    frame = wsproto_client().send(WpText(data="héllo"))
    assert FrameCodec().receive(frame) == [TextMessage("héllo")]


def test_binary_frame_from_wsproto_client() -> None:
    frame = wsproto_client().send(WpBytes(data=b"\x00\xff"))
    assert FrameCodec().receive(frame) == [BinaryMessage(b"\x00\xff")]


def test_many_frames_in_one_buffer_keep_their_order() -> None:
    sizes = [0, 1, 125, 126, 65535, 65536]
    buf = b"".join(client_frame(BINARY, bytes([i % 256]) * n) for i, n in enumerate(sizes))
    events = FrameCodec().receive(buf)
    expected = [BinaryMessage(bytes([i % 256]) * n) for i, n in enumerate(sizes)]
    assert events == expected, "every length encoding (7, 16 and 64 bit) must parse"


def test_frame_split_byte_by_byte() -> None:
    codec = FrameCodec()
    data = client_frame(TEXT, "día".encode())
    events: list[object] = []
    for i in range(len(data)):
        events += codec.receive(data[i : i + 1])
    assert events == [TextMessage("día")]


def test_fragments_across_receive_calls_make_one_message() -> None:
    client = wsproto_client()
    codec = FrameCodec()
    assert codec.receive(client.send(WpText(data="ab", message_finished=False))) == []
    assert codec.receive(client.send(WpText(data="cd", message_finished=False))) == []
    assert codec.receive(client.send(WpText(data="ef"))) == [TextMessage("abcdef")]


def test_multibyte_character_split_between_fragments() -> None:
    raw = "€".encode()  # three bytes
    codec = FrameCodec()
    events = codec.receive(
        client_frame(TEXT, raw[:1], fin=False)
        + client_frame(CONT, raw[1:2], fin=False)
        + client_frame(CONT, raw[2:])
    )
    assert events == [TextMessage("€")]


def test_binary_fragments_joined() -> None:
    codec = FrameCodec()
    events = codec.receive(client_frame(BINARY, b"ab", fin=False) + client_frame(CONT, b"cd"))
    assert events == [BinaryMessage(b"abcd")]


def test_control_frames_interleaved_with_fragments_come_first() -> None:
    codec = FrameCodec()
    events = codec.receive(
        client_frame(TEXT, b"he", fin=False)
        + client_frame(PING, b"p1")
        + client_frame(CONT, b"ll", fin=False)
        + client_frame(PONG, b"p2")
        + client_frame(CONT, b"o")
    )
    assert events == [Ping(b"p1"), Pong(b"p2"), TextMessage("hello")]


def test_empty_messages() -> None:
    events = FrameCodec().receive(client_frame(TEXT) + client_frame(BINARY))
    assert events == [TextMessage(""), BinaryMessage(b"")]


# --- close ----------------------------------------------------------------------


def test_empty_close_gives_1005() -> None:
    codec = FrameCodec()
    assert codec.receive(client_frame(CLOSE)) == [CloseReceived(1005, "")]
    assert codec.close_received, "close_received must be set"


def test_close_with_code_and_reason_from_wsproto_client() -> None:
    frame = wsproto_client().send(WpClose(code=4001, reason="bye ✓"))
    assert FrameCodec().receive(frame) == [CloseReceived(4001, "bye ✓")]


def test_data_after_close_is_ignored() -> None:
    codec = FrameCodec()
    events = codec.receive(client_frame(CLOSE, close_payload(1000)) + client_frame(TEXT, b"x"))
    assert events == [CloseReceived(1000, "")]
    assert codec.receive(client_frame(TEXT, b"y")) == []
    assert codec.receive(b"") == [], "EOF after a Close is a clean end, not a lost connection"


def test_close_in_the_middle_of_a_fragmented_message_drops_it() -> None:
    codec = FrameCodec()
    events = codec.receive(client_frame(TEXT, b"part", fin=False) + client_frame(CLOSE))
    assert events == [CloseReceived(1005, "")]


@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 1016, 2999, 5000])
def test_close_with_invalid_code_is_a_protocol_error(code: int) -> None:
    events = FrameCodec().receive(client_frame(CLOSE, close_payload(code)))
    assert failure_code(events) == 1002


def test_close_with_one_byte_payload_is_a_protocol_error() -> None:
    assert failure_code(FrameCodec().receive(client_frame(CLOSE, b"\x03"))) == 1002


def test_close_reason_with_invalid_utf8_gives_1007() -> None:
    events = FrameCodec().receive(client_frame(CLOSE, close_payload(1000, b"\xff")))
    assert failure_code(events) == 1007


# --- protocol violations ----------------------------------------------------------


def test_invalid_utf8_text_gives_1007() -> None:
    assert failure_code(FrameCodec().receive(client_frame(TEXT, b"ok\xc3\x28"))) == 1007


def test_invalid_utf8_in_first_fragment_fails_before_the_message_ends() -> None:
    events = FrameCodec().receive(client_frame(TEXT, b"\xed\xa0\x80", fin=False))
    assert failure_code(events) == 1007


def test_truncated_utf8_at_end_of_message_gives_1007() -> None:
    events = FrameCodec().receive(client_frame(TEXT, b"a\xe2\x82", fin=False) + client_frame(CONT))
    assert failure_code(events) == 1007


def test_oversized_frame_fails_from_its_header_alone() -> None:
    codec = FrameCodec(max_message_size=1000)
    header = client_frame(BINARY, b"x" * 1001)[:8]  # 2 + 2 length + 4 mask, no payload
    events = codec.receive(header)
    assert failure_code(events) == 1009
    reason = events[-1].reason  # type: ignore[union-attr]
    assert "1,001" in reason, f"reason names the size: {reason!r}"
    assert "1,000" in reason, f"reason names the limit: {reason!r}"


def test_message_of_exactly_the_limit_is_accepted() -> None:
    codec = FrameCodec(max_message_size=1000)
    assert codec.receive(client_frame(BINARY, b"x" * 1000)) == [BinaryMessage(b"x" * 1000)]


def test_oversized_fragmented_message_gives_1009() -> None:
    codec = FrameCodec(max_message_size=1000)
    assert codec.receive(client_frame(TEXT, b"a" * 600, fin=False)) == []
    assert failure_code(codec.receive(client_frame(CONT, b"a" * 401))) == 1009


def test_ping_inside_a_nearly_full_message_is_not_oversized() -> None:
    codec = FrameCodec(max_message_size=1000)
    events = codec.receive(
        client_frame(BINARY, b"a" * 999, fin=False)
        + client_frame(PING, b"p" * 125)
        + client_frame(CONT, b"a")
    )
    assert events == [Ping(b"p" * 125), BinaryMessage(b"a" * 1000)]


@pytest.mark.parametrize("opcode", [0x3, 0x7, 0xB, 0xF])
def test_reserved_opcode_gives_1002(opcode: int) -> None:
    assert failure_code(FrameCodec().receive(client_frame(opcode, b"x"))) == 1002


def test_unmasked_frame_gives_1002() -> None:
    assert failure_code(FrameCodec().receive(client_frame(TEXT, b"x", mask=False))) == 1002


@pytest.mark.parametrize("rsv", [1, 2, 4])
def test_reserved_bits_give_1002(rsv: int) -> None:
    # No extension is negotiated, so RSV1 (permessage-deflate) is an error too.
    assert failure_code(FrameCodec().receive(client_frame(TEXT, b"x", rsv=rsv))) == 1002


def test_continuation_without_a_message_gives_1002() -> None:
    assert failure_code(FrameCodec().receive(client_frame(CONT, b"x"))) == 1002


def test_new_message_inside_a_fragmented_one_gives_1002() -> None:
    events = FrameCodec().receive(client_frame(TEXT, b"a", fin=False) + client_frame(TEXT, b"b"))
    assert failure_code(events) == 1002


def test_fragmented_control_frame_gives_1002() -> None:
    assert failure_code(FrameCodec().receive(client_frame(PING, b"x", fin=False))) == 1002


def test_control_frame_over_125_bytes_gives_1002() -> None:
    assert failure_code(FrameCodec().receive(client_frame(PING, b"x" * 126))) == 1002


@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE])
@pytest.mark.parametrize("length", [126, 1001, 2**62])
def test_control_frame_header_claiming_a_huge_payload_gives_1002_not_1009(
    opcode: int, length: int
) -> None:
    # A control frame over 125 bytes is a protocol error whatever the
    # message size limit; its header alone is enough to tell.
    header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length) + os.urandom(4)
    code = failure_code(FrameCodec(max_message_size=1000).receive(header))
    assert code == 1002, f"a {length:,}-byte control frame header gave {code}"


def test_events_before_a_violation_are_kept_and_later_data_ignored() -> None:
    codec = FrameCodec()
    events = codec.receive(client_frame(TEXT, b"ok") + client_frame(0x3) + client_frame(TEXT))
    assert events[0] == TextMessage("ok")
    assert failure_code(events) == 1002
    assert len(events) == 2, f"nothing is parsed after a failure: {events!r}"
    assert codec.receive(client_frame(TEXT, b"more")) == []


def test_long_failure_reason_fits_a_close_frame() -> None:
    events = FrameCodec().receive(client_frame(TEXT, b"\xff" + b"x" * 200))
    reason = events[-1].reason  # type: ignore[union-attr]
    assert len(reason.encode()) <= 123, f"reason is {len(reason.encode())} bytes"


# --- EOF --------------------------------------------------------------------------


def test_eof_between_frames_is_connection_lost() -> None:
    assert FrameCodec().receive(b"") == [ConnectionLost()]


def test_eof_inside_a_frame_is_connection_lost() -> None:
    codec = FrameCodec()
    assert codec.receive(client_frame(TEXT, b"hello")[:-2]) == []
    assert codec.receive(b"") == [ConnectionLost()]


# --- is_idle ------------------------------------------------------------------------


def test_fresh_codec_is_idle() -> None:
    assert FrameCodec().is_idle


def test_idle_after_complete_frames() -> None:
    codec = FrameCodec()
    codec.receive(client_frame(TEXT, b"a") + client_frame(PING))
    assert codec.is_idle, "nothing is buffered after complete frames"


@pytest.mark.parametrize("cut", [1, 2, 6, 9])
def test_not_idle_mid_frame(cut: int) -> None:
    # cut 1: half a header; 2: header without mask; 6: header+mask; 9: part of the payload
    codec = FrameCodec()
    codec.receive(client_frame(TEXT, b"hello")[:cut])
    assert not codec.is_idle, f"{cut} bytes of a frame are buffered"


def test_not_idle_between_fragments() -> None:
    codec = FrameCodec()
    codec.receive(client_frame(TEXT, b"a", fin=False))
    assert not codec.is_idle, "half a message is buffered"
    codec.receive(client_frame(CONT, b"b"))
    assert codec.is_idle


def test_not_idle_once_closing() -> None:
    received = FrameCodec()
    received.receive(client_frame(CLOSE))
    sent = FrameCodec()
    sent.send_close()
    assert not received.is_idle, "a codec that received Close must be kept"
    assert not sent.is_idle, "a codec that sent Close must be kept"


# --- sending ------------------------------------------------------------------------


def parse_with_wsproto_client(data: bytes) -> list[object]:
    client = wsproto_client()
    client.receive_data(data)
    return list(client.events())


def test_sent_frames_parse_in_wsproto_client() -> None:
    codec = FrameCodec()
    data = codec.send_text("hé" * 100) + codec.send_binary(b"\x01" * 70000)
    events = parse_with_wsproto_client(data)
    assert [type(e).__name__ for e in events] == ["TextMessage", "BytesMessage"]
    assert events[0].data == "hé" * 100  # type: ignore[attr-defined]
    assert events[1].data == b"\x01" * 70000  # type: ignore[attr-defined]


def test_sent_frames_are_unmasked() -> None:
    assert serialize_message("hi") == b"\x81\x02hi"
    assert serialize_message(b"hi") == b"\x82\x02hi"


def test_ping_and_pong() -> None:
    codec = FrameCodec()
    assert codec.send_ping(b"a") == b"\x89\x01a"
    assert codec.send_pong(b"a") == b"\x8a\x01a"


def test_control_payload_over_125_bytes_is_refused() -> None:
    with pytest.raises(LimitExceededError, match="126 bytes; the limit is 125"):
        FrameCodec().send_pong(b"x" * 126)


def test_send_close_frame_and_flag() -> None:
    codec = FrameCodec()
    frame = codec.send_close(4000, "done")
    assert frame == b"\x88\x06" + close_payload(4000, b"done")
    assert codec.close_sent


def test_nothing_but_control_frames_after_close_sent() -> None:
    codec = FrameCodec()
    codec.send_close()
    with pytest.raises(trio.ClosedResourceError):
        codec.send_text("late")
    with pytest.raises(trio.ClosedResourceError):
        codec.send_close()
    assert codec.send_pong(b"") == b"\x8a\x00", "control frames may follow a Close"


def test_close_reply_after_close_received() -> None:
    codec = FrameCodec()
    codec.receive(client_frame(CLOSE, close_payload(1001)))
    reply = codec.send_close(1001)
    assert parse_with_wsproto_client(reply) == [WpClose(code=1001, reason="")]


def test_invalid_close_does_not_mark_close_sent() -> None:
    codec = FrameCodec()
    with pytest.raises(ValueError, match="1006"):
        codec.send_close(1006)
    assert not codec.close_sent


def test_serialize_close_allows_codes_websockets_would_refuse() -> None:
    # close() lets an object send 1016-2999; websockets' own Close.serialize refuses them.
    assert serialize_close(2000) == b"\x88\x02" + close_payload(2000)


# --- helpers ------------------------------------------------------------------------


def test_accept_key_matches_rfc_6455_example() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1007, 1011, 1014, 1016, 2999, 3000, 4999])
def test_validate_close_accepts(code: int) -> None:
    validate_close(code, "r" * 123)


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 5000, 65535])
def test_validate_close_refuses_code(code: int) -> None:
    with pytest.raises(ValueError, match=f"close code {code} "):
        validate_close(code, "")


@pytest.mark.parametrize("code", ["1000", 1000.0, True, None])
def test_validate_close_refuses_a_code_that_is_not_an_int(code: object) -> None:
    with pytest.raises(TypeError, match=f"close code must be an int, got {re.escape(repr(code))}"):
        validate_close(code, "")  # type: ignore[arg-type]


def test_validate_close_refuses_a_reason_that_is_not_a_str() -> None:
    with pytest.raises(TypeError, match="close reason must be a str, got b'bye'") as refused:
        validate_close(1000, b"bye")  # type: ignore[arg-type]
    # close() promises a ValueError for anything but an allowed code and reason.
    assert isinstance(refused.value, ValueError)


def test_validate_close_refuses_long_reason_naming_size_and_limit() -> None:
    with pytest.raises(ValueError, match="close reason is 130 bytes; the limit is 123"):
        validate_close(1000, "x" * 130)


def test_validate_close_counts_utf8_bytes_not_characters() -> None:
    with pytest.raises(LimitExceededError, match="is 124 bytes"):
        validate_close(1000, "é" * 62)  # 62 characters, 124 bytes


def test_max_message_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        FrameCodec(max_message_size=0)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
@pytest.mark.parametrize("text", [True, False])
def test_hand_packed_frames_match_the_reference_serializer(size: int, text: bool) -> None:
    from websockets.frames import Frame as RefFrame
    from websockets.frames import Opcode as RefOpcode

    from trio_durable._websocket._frames import serialize_message

    raw = bytes(range(256)) * (size // 256) + bytes(size % 256)
    data: str | bytes = "é" * size if text else raw
    payload = data.encode("utf-8") if isinstance(data, str) else data
    opcode = RefOpcode.TEXT if text else RefOpcode.BINARY
    expected = RefFrame(opcode, payload).serialize(mask=False)
    assert serialize_message(data) == expected, f"size {size}"
    assert serialize_message(data) == expected, "the cached frame of a repeated message"
