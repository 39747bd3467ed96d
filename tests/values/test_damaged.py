"""Damaged bytes fail to decode with a ``ValueError``, whatever the damage.

Storage turns that ``ValueError`` into the ``StorageError`` naming the key
(``tests/storage/test_data_dir.py``); any other exception type would escape
as a bare crash of the handler instead. Bytes crafted to look like the
codec's own marks must fail the same way, and never decode to one of the
codec's internal objects.
"""

from __future__ import annotations

import contextlib
import datetime
import decimal
import enum
import sqlite3
import struct
import uuid
from pathlib import Path
from typing import Any

import attrs
import msgpack  # type: ignore[import-untyped]  # ships no type hints
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trio_durable as td
from trio_durable import _codec
from trio_durable._http import Headers
from trio_durable._storage._values import ValueCodec
from trio_durable.testing import run_in_object

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


# ------------------------------------------------------------ crafted bytes


@attrs.frozen
class Fuzzed:
    name: str
    score: int = 0


class Shade(enum.Enum):
    DARK = 1


class Handle:
    """What the receiver's ``resolve_handle`` gives for any handle."""


ALLOWED = _codec.allow(Fuzzed, Shade)

#: Types a decoded value may be made of (``decode``); records, enum members
#: and handles only come out of ``decode_call``, and only as declared.
_SCALARS = {
    type(None),
    bool,
    int,
    float,
    str,
    bytes,
    bytearray,
    datetime.datetime,
    datetime.date,
    datetime.time,
    datetime.timedelta,
    decimal.Decimal,
    uuid.UUID,
    Headers,
    td.Request,
    td.Response,
}
_CONTAINERS = {list, tuple, set, frozenset}
_ZONED = {datetime.datetime, datetime.time}


def _unsupported(value: Any, extra: tuple[type, ...] = ()) -> str | None:
    """The first part of ``value`` that is not a supported type (None if all are).

    Iterative: crafted bytes may nest far deeper than a recursive check could go.
    """
    pending = [value]
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind in _SCALARS or kind in extra:
            zone = getattr(item, "tzinfo", None) if kind in _ZONED else None
            if zone is not None and type(zone) is not datetime.timezone:
                return f"{item!r} has a tzinfo of {type(zone)}"
            continue
        if kind in _CONTAINERS:
            pending.extend(item)
        elif kind is dict:
            pending.extend(item.keys())
            pending.extend(item.values())
        else:
            return f"{item!r} of type {kind}"
    return None


def _packed(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


#: Pieces of MessagePack that the codec gives a meaning to, to glue together.
_PIECES = st.one_of(
    st.integers(0, 15).map(lambda n: bytes([0x90 | n])),  # an array of n items
    st.integers(0, 15).map(lambda n: bytes([0x80 | n])),  # a map of n pairs
    st.integers(0, 30).map(lambda code: b"\xc7\x00" + bytes([code])),  # empty extension: marks
    st.tuples(st.integers(0, 30), st.binary(max_size=20)).map(
        lambda t: b"\xc7" + bytes([len(t[1]), t[0]]) + t[1]  # an extension value
    ),
    st.tuples(st.integers(16, 23), st.sampled_from([1, 2, 4, 8, 16])).flatmap(
        lambda t: st.binary(min_size=t[1], max_size=t[1]).map(
            lambda payload: (
                bytes([{1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}[t[1]], t[0]]) + payload
            )
        )
    ),
    st.sampled_from(
        [
            _packed(name)
            for name in (
                "td.Headers",
                "td.Request",
                "td.Response",
                "stub",
                _codec.class_name(Fuzzed),
                _codec.class_name(Shade),
                "name",
                "score",
            )
        ]
    ),
    st.sampled_from(
        [b"\xc0", b"\xc2", b"\xc3", b"\x00", b"\x01", b"\x7f", b"\xff", b"\xa0", b"\xc4\x00"]
    ),
    st.floats().map(lambda f: b"\xcb" + struct.pack(">d", f)),
    st.binary(max_size=3),
)

#: Bytes after the format byte: random, or glued from meaningful pieces.
crafted = st.one_of(
    st.binary(max_size=40),
    st.lists(_PIECES, max_size=24).map(b"".join),
).map(lambda payload: b"\x01" + payload)


@pytest.mark.parametrize(
    "data",
    [
        b"\x01\x91\xc7\x00\x06",  # [value mark] without its name and data
        b"\x01\x92\xc7\x00\x06\xaatd.Headers",  # [value mark, name] without its data
        b"\x01\xc7\x00\x02",  # a set mark alone
        b"\x01\x81\xc7\x00\x01\x00",  # a tuple mark as a map key
        b"\x01\x81\x00\xc7\x00\x01",  # a tuple mark as a map value
        b"\x01\x92\x00\xc7\x00\x01",  # a tuple mark second in an array
        b"\x01\x93\xc7\x00\x06\x01\x02",  # a value type whose name is not a str
        b"\x01\x93\xc7\x00\x06\xaatd.Headers\x01",  # Headers from an int
        b"\x01\x93\xc7\x00\x06\xaatd.Request\x90",  # a Request from an empty array
        b"\x01\xd7\x12" + bytes(8),  # a datetime of year 0
        b"\x01\xc7\x0d\x12" + struct.pack(">HBBBBBIB", 2024, 1, 1, 0, 0, 0, 0, 0) + b"\x01",
        b"\x01\xc7\x15\x12" + struct.pack(">HBBBBBIB", 2024, 1, 1, 0, 0, 0, 0, 0) + bytes(9),
    ],
    ids=[
        "value-mark-alone-in-array",
        "value-mark-without-data",
        "bare-mark",
        "mark-as-key",
        "mark-as-value",
        "mark-not-first",
        "value-name-not-str",
        "headers-from-int",
        "request-from-empty",
        "datetime-year-0",
        "datetime-offset-of-one-byte",
        "datetime-offset-of-nine-bytes",
    ],
)
def test_crafted_marks_are_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError, match="cannot decode a stored value"):
        _codec.decode(data)
    with pytest.raises(ValueError, match="cannot decode an RPC value"):
        _codec.decode_call(data, allowed=ALLOWED, resolve_handle=lambda kind, ref: Handle())


@pytest.mark.parametrize(
    "data",
    [
        b"\x01\x91\xc7\x00\x04",  # [record mark] alone
        b"\x01\x91\xc7\x00\x05",  # [enum mark] alone
        b"\x01\x91\xc7\x00\x07",  # [handle mark] alone
        b"\x01\x93\xc7\x00\x04" + _packed(_codec.class_name(Fuzzed)) + b"\x01",  # fields: int
        b"\x01\x93\xc7\x00\x04" + _packed(_codec.class_name(Fuzzed)) + b"\x80",  # no name
        b"\x01\x93\xc7\x00\x05" + _packed(_codec.class_name(Shade)) + b"\x07",  # no member 7
        b"\x01\x94\xc7\x00\x05" + _packed(_codec.class_name(Shade)) + b"\x01\x01",  # 4 items
    ],
    ids=["record", "enum", "handle", "fields-int", "field-missing", "no-member", "long"],
)
def test_crafted_rpc_marks_are_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError, match="cannot decode an RPC value"):
        _codec.decode_call(data, allowed=ALLOWED, resolve_handle=lambda kind, ref: Handle())


def test_a_handle_the_receiver_cannot_resolve_is_a_value_error() -> None:
    def resolve(kind: str, reference: Any) -> Any:
        namespace, hex_id, name = reference  # as the cluster's resolver unpacks a stub
        return {"rooms": Handle()}[namespace]  # an unknown namespace: KeyError

    data = b"\x01\x93\xc7\x00\x07" + _packed("stub") + _packed(["nowhere", "ab", None])
    with pytest.raises(ValueError, match="cannot decode an RPC value"):
        _codec.decode_call(data, resolve_handle=resolve)
    too_few = b"\x01\x93\xc7\x00\x07" + _packed("stub") + _packed(["rooms"])
    with pytest.raises(ValueError, match="cannot decode an RPC value"):
        _codec.decode_call(too_few, resolve_handle=resolve)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(crafted)
def test_crafted_bytes_decode_to_supported_values_or_a_value_error(data: bytes) -> None:
    try:
        value = _codec.decode(data)
    except ValueError:
        return
    except Exception as exc:
        pytest.fail(f"{data!r} raised {exc!r}, not a ValueError")
    problem = _unsupported(value)
    assert problem is None, f"{data!r} decoded to {value!r}: {problem}"


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(crafted)
def test_crafted_rpc_bytes_decode_to_supported_values_or_a_value_error(data: bytes) -> None:
    try:
        value = _codec.decode_call(
            data, allowed=ALLOWED, resolve_handle=lambda kind, ref: Handle(), where="args"
        )
    except ValueError:
        return
    except TypeError as exc:  # only a class the receiver does not declare
        message = str(exc)
        assert message.startswith("args: ") and "does not declare" in message, message
        return
    except Exception as exc:
        pytest.fail(f"{data!r} raised {exc!r}, not a ValueError")
    problem = _unsupported(value, (Fuzzed, Shade, Handle))
    assert problem is None, f"{data!r} decoded to {value!r}: {problem}"


@settings(max_examples=500, deadline=None)
@given(crafted)
def test_crafted_stored_bytes_are_a_storage_error_naming_the_key(data: bytes) -> None:
    try:
        value = ValueCodec(2**21).loads("planted", data, None)
    except td.StorageError as exc:
        message = str(exc)
        assert "key 'planted' cannot be decoded" in message, message
        return
    problem = _unsupported(value)
    assert problem is None, f"{data!r} was read as {value!r}: {problem}"


@attrs.define(eq=False)
class Box(td.DurableObject):
    pass


#: Rows planted in a real data dir, next to a good one.
PLANTED = {
    "value-mark-alone": b"\x01\x91\xc7\x00\x06",
    "bare-mark": b"\x01\xc7\x00\x02",
    "mark-as-key": b"\x01\x81\xc7\x00\x01\x00",
    "record-in-storage": _codec.encode_call(Fuzzed("x")),
    "headers-from-int": b"\x01\x93\xc7\x00\x06\xaatd.Headers\x01",
}


async def test_planted_rows_are_storage_errors_naming_their_key(tmp_path: Path) -> None:
    async def put(obj: Any, ctx: td.ObjectContext) -> None:
        await ctx.storage.put({"good": [1, (2,)], **dict.fromkeys(PLANTED, 0)})

    async with td.open_runtime({"boxes": Box}, tmp_path) as rt:
        await run_in_object(rt.namespace("boxes").get_by_name("b"), put)
    with contextlib.closing(sqlite3.connect(tmp_path / "trio_durable.sqlite3")) as db:
        for key, data in PLANTED.items():
            db.execute("UPDATE _td_kv SET value = ? WHERE key = ?", (data, key))
        db.commit()

    async def read(obj: Any, ctx: td.ObjectContext) -> dict[str, str]:
        outcome = {"good": repr(await ctx.storage.get("good"))}
        for key in PLANTED:
            try:
                outcome[key] = repr(await ctx.storage.get(key))
            except td.StorageError as exc:
                outcome[key] = str(exc)
        return outcome

    async with td.open_runtime({"boxes": Box}, tmp_path) as rt:
        outcome = await run_in_object(rt.namespace("boxes").get_by_name("b"), read)
    assert outcome.pop("good") == "[1, (2,)]", "the other rows still read"
    for key, message in outcome.items():
        assert f"key {key!r} cannot be decoded" in message, f"{key}: {message}"
