"""Damaged bytes fail to decode with a ``ValueError``, whatever the damage.

Storage turns that ``ValueError`` into the ``StorageError`` naming the key
(``tests/storage/test_data_dir.py``); any other exception type would escape
as a bare crash of the handler instead.
"""

from __future__ import annotations

import datetime
import decimal
import uuid

import msgpack  # type: ignore[import-untyped]  # ships no type hints
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_durable import _codec

SAMPLE = {
    "when": datetime.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=datetime.UTC),
    "day": datetime.date(2024, 1, 2),
    "at": datetime.time(1, 2, 3),
    "span": datetime.timedelta(days=3, seconds=4),
    "amount": decimal.Decimal("1.50"),
    "id": uuid.UUID(int=9),
    "big": 10**30,
    "raw": bytearray(b"ab"),
    "shapes": [(1, 2), {3}, frozenset({4})],
}


def _ext(code: int, payload: bytes) -> bytes:
    return b"\x01" + msgpack.packb(msgpack.ExtType(code, payload))


@pytest.mark.parametrize(
    "data",
    [
        _ext(18, b"\x00"),  # datetime cut short (struct.error)
        _ext(20, b"\x00\x00"),  # time cut short
        _ext(21, b"\x7f\xff\xff\xff" + bytes(8)),  # timedelta beyond 999,999,999 days
        _ext(22, b"zz"),  # a Decimal that is not a number (decimal.InvalidOperation)
        _ext(23, b"abc"),  # a UUID of 3 bytes
        _ext(19, b"\xff"),  # a date that is not ASCII
        b"\x01\x92\x01",  # MessagePack cut short
        b"[" * 100_000,  # JSON deeper than the interpreter's recursion limit
    ],
    ids=[
        "datetime",
        "time",
        "timedelta",
        "decimal",
        "uuid",
        "date",
        "truncated",
        "deep-json",
    ],
)
def test_damaged_value_is_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError, match="cannot decode"):
        _codec.decode(data)


def test_damaged_rpc_value_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="cannot decode an RPC value"):
        _codec.decode_call(_ext(18, b"\x00"))


@st.composite
def _damaged(draw: st.DrawFn) -> bytes:
    data = bytearray(_codec.encode(SAMPLE))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(1, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "cut", "insert"]))
        if kind == "flip":
            data[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[at:]
            if len(data) < 2:
                break
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
    return bytes(data)


@settings(max_examples=500, deadline=None)
@given(_damaged())
def test_any_damage_decodes_or_is_a_value_error(data: bytes) -> None:
    try:
        _codec.decode(data)  # damage can leave valid data
    except ValueError:
        pass
    except Exception as exc:
        pytest.fail(f"{data!r} raised {exc!r}, not a ValueError")


@settings(max_examples=300, deadline=None)
@given(_damaged())
def test_any_damage_to_an_rpc_value_decodes_or_is_a_value_error(data: bytes) -> None:
    try:
        _codec.decode_call(data)
    except ValueError:
        pass
    except TypeError as exc:  # only for a record or handle the receiver does not take
        if "the receiver" not in str(exc):
            pytest.fail(f"{data!r} raised {exc!r}")
    except Exception as exc:
        pytest.fail(f"{data!r} raised {exc!r}, not a ValueError")
