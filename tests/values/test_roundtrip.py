"""Values round-trip exactly through the codec, without ``type=``."""

from __future__ import annotations

import datetime
import decimal
import uuid
import zoneinfo
from typing import Any

import pytest
from hypothesis import given, settings

from trio_durable import _codec

from ._same import fixed_zones, same
from ._strategies import RPC_CLASSES, UserZone, rpc_values, values

ALLOWED = _codec.allow(*RPC_CLASSES)


@settings(max_examples=300, deadline=None)
@given(values)
def test_storage_round_trip_is_exact(value: Any) -> None:
    back = _codec.decode(_codec.encode(value))
    assert same(fixed_zones(value), back), f"{value!r} came back as {back!r}"


@settings(max_examples=300, deadline=None)
@given(rpc_values)
def test_rpc_round_trip_is_exact(value: Any) -> None:
    back = _codec.decode_call(_codec.encode_call(value), allowed=ALLOWED)
    assert same(fixed_zones(value), back), f"{value!r} came back as {back!r}"


@settings(max_examples=300, deadline=None)
@given(rpc_values)
def test_copy_equals_the_round_trip(value: Any) -> None:
    copied = _codec.copy_value(value)
    crossed = _codec.decode_call(_codec.encode_call(value), allowed=ALLOWED)
    assert same(crossed, copied), (
        f"{value!r}: copied in process as {copied!r}, across as {crossed!r}"
    )
    assert same(fixed_zones(value), copied), f"{value!r} was copied as {copied!r}"


@pytest.mark.parametrize(
    "value",
    [
        True,
        False,
        0,
        2**64 - 1,
        2**64,
        -(2**63),
        -(2**63) - 1,
        10**100,
        -(10**100),
        float("nan"),
        float("inf"),
        float("-inf"),
        -0.0,
        "",
        "\ud800 lone surrogate",
        b"",
        bytearray(b"\x00\xff"),
        (),
        ((),),
        set(),
        frozenset(),
        {(1, "a"): 1, frozenset({2}): 2, b"k": 3, None: 4, 2.5: 5, True: 6},
        {(1, (2, frozenset({3}))): [1]},
        {frozenset({(1, 2)}): {(3, 4)}},
        datetime.datetime(2024, 5, 1, 12, 30, 45, 123456),
        datetime.datetime(2024, 10, 27, 2, 30, fold=1),
        datetime.datetime(1, 1, 1, tzinfo=datetime.UTC),
        datetime.datetime(
            9999,
            12,
            31,
            23,
            59,
            59,
            999999,
            tzinfo=datetime.timezone(datetime.timedelta(hours=5, minutes=30, seconds=15)),
        ),
        datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(microseconds=5))),
        datetime.date(1, 1, 1),
        datetime.time(23, 59, 59, 999999),
        datetime.time(1, 2, tzinfo=datetime.timezone(datetime.timedelta(hours=-3))),
        datetime.timedelta(days=-999_999_999),
        datetime.timedelta(days=999_999_999, seconds=86399, microseconds=999_999),
        decimal.Decimal("-0"),
        decimal.Decimal("1.10"),
        decimal.Decimal("-sNaN12"),
        decimal.Decimal("-Infinity"),
        decimal.Decimal("1E+999999"),
        uuid.UUID(int=0),
    ],
    ids=repr,
)
def test_edge_values_round_trip(value: Any) -> None:
    back = _codec.decode(_codec.encode(value))
    assert same(value, back), f"{value!r} came back as {back!r}"


def test_bool_stays_bool_in_a_list() -> None:
    back = _codec.decode(_codec.encode([True, 1, False, 0]))
    assert [type(v) for v in back] == [bool, int, bool, int], f"types changed: {back!r}"


def test_zoneinfo_comes_back_as_its_fixed_offset() -> None:
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    value = datetime.datetime(2024, 7, 1, 12, 0, tzinfo=paris)
    back = _codec.decode(_codec.encode(value))
    expected = datetime.datetime(
        2024, 7, 1, 12, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
    )
    assert same(expected, back), f"expected the +02:00 offset, got {back!r}"
    assert back == value, "the same instant"


@pytest.mark.parametrize("copy", [False, True], ids=["across", "in-process"])
def test_zones_cross_rpc_as_their_fixed_offset(copy: bool) -> None:
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    mine = UserZone(90)
    value = [
        datetime.datetime(2024, 7, 1, 12, 0, tzinfo=paris),
        datetime.datetime(2024, 10, 27, 2, 30, tzinfo=paris, fold=1),  # the second 02:30
        datetime.time(9, 0, tzinfo=paris),  # a ZoneInfo gives a time no offset
        datetime.time(9, 0, tzinfo=mine),
        datetime.datetime(2024, 1, 1, tzinfo=mine),
        datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=1), "CET")),
    ]
    back = _codec.copy_value(value) if copy else _codec.decode_call(_codec.encode_call(value))

    def zone(hours: float) -> datetime.timezone:
        return datetime.timezone(datetime.timedelta(hours=hours))

    expected = [
        datetime.datetime(2024, 7, 1, 12, 0, tzinfo=zone(2)),
        datetime.datetime(2024, 10, 27, 2, 30, tzinfo=zone(1), fold=1),
        datetime.time(9, 0),
        datetime.time(9, 0, tzinfo=zone(1.5)),
        datetime.datetime(2024, 1, 1, tzinfo=zone(1.5)),
        datetime.datetime(2024, 1, 1, tzinfo=zone(1)),
    ]
    assert same(expected, back), f"got {back!r}"
    assert all(item.tzinfo is not mine for item in back), "a user's tzinfo is never shared"


def test_a_zoned_argument_is_not_shared_by_the_copy() -> None:
    args = (datetime.datetime(2024, 7, 1, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")), 1)
    copied = _codec.copy_value(args, where="args")
    assert copied is not args and type(copied[0].tzinfo) is datetime.timezone, f"{copied!r}"
    fixed = (datetime.datetime(2024, 7, 1, tzinfo=datetime.UTC), 1)
    assert _codec.copy_value(fixed) is fixed, "a fixed offset is shared: nothing to change"


def test_subclass_of_a_builtin_comes_back_as_the_builtin() -> None:
    import collections

    point = collections.namedtuple("point", "x y")
    value = [collections.OrderedDict(a=1), point(1, 2), type("S", (str,), {})("s")]
    back = _codec.decode(_codec.encode(value))
    assert same([{"a": 1}, (1, 2), "s"], back), f"got {back!r}"


def test_int_enum_is_stored_as_its_value() -> None:
    import enum

    class Color(enum.IntEnum):
        RED = 1

    back = _codec.decode(_codec.encode({"c": Color.RED}))
    assert same({"c": 1}, back), f"got {back!r}"
    assert _codec.decode(_codec.encode(Color.RED), type=Color) is Color.RED, "type= brings it back"


def test_decoded_values_are_fresh_copies() -> None:
    data = _codec.encode({"a": [1]})
    first = _codec.decode(data)
    first["a"].append(2)
    assert _codec.decode(data) == {"a": [1]}, "a decode shares nothing with the previous one"
