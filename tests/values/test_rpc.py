"""RPC values: copies in one process, class-keeping encodings across processes."""

from __future__ import annotations

import enum
from typing import Any

import attrs
import pytest

import trio_durable as td
from trio_durable import _codec
from trio_durable._http import Headers

from ._same import same


@attrs.define
class Member:
    name: str
    scores: list[int] = attrs.Factory(list)


@attrs.frozen
class Point:
    x: int
    y: int


@attrs.frozen
class Tagged:
    point: Point
    tags: tuple[str, ...]


class Color(enum.Enum):
    RED = "red"


class FakeStub:
    """Stands for trio_durable's Stub, which lives in a higher layer."""

    def __init__(self, namespace: str, hex_id: str, name: str | None) -> None:
        self.namespace, self.hex, self.name = namespace, hex_id, name


_codec.register_handle_type(FakeStub, name="stub", to_ref=lambda s: (s.namespace, s.hex, s.name))
# What trio_durable._http registers in the integration phase.
_codec.register_value_type(
    Headers, name="td.Headers", to_data=Headers.items_raw, from_data=Headers, immutable=True
)


# ------------------------------------------------------------------ copy_value


@pytest.mark.parametrize(
    "value",
    [
        42,
        "s",
        b"b",
        3.5,
        None,
        True,
        (1, "a", (b"x", None)),
        frozenset({1, (2, 3)}),
        Point(1, 2),
        Tagged(Point(1, 2), ("a",)),
        Color.RED,
        (42, "room", Point(0, 0)),
    ],
    ids=repr,
)
def test_immutable_values_are_not_copied(value: Any) -> None:
    assert _codec.copy_value(value) is value, "an immutable value is shared, not copied"


def test_mutating_the_copy_leaves_the_original() -> None:
    original = {"items": [1, 2], "nested": {"s": {1}}, "b": bytearray(b"x")}
    copied = _codec.copy_value(original)
    copied["items"].append(3)
    copied["nested"]["s"].add(2)
    copied["b"].append(0)
    expected = {"items": [1, 2], "nested": {"s": {1}}, "b": bytearray(b"x")}
    assert same(expected, original), f"the original changed: {original!r}"


def test_copy_of_args_shares_nothing_mutable() -> None:
    items = [1, 2]
    args = (items, "x")
    copied = _codec.copy_value(args, where="args")
    assert copied[0] is not items and copied[0] == items, "the list was copied"
    assert copied[1] is args[1], "the str was shared"


def test_copy_keeps_the_record_class_and_copies_it() -> None:
    member = Member("ada", [1])
    copied = _codec.copy_value(member)
    assert type(copied) is Member and copied == member, f"got {copied!r}"
    copied.scores.append(2)
    assert member.scores == [1], "the original record did not change"


def test_frozen_record_holding_a_list_is_copied() -> None:
    @attrs.frozen
    class Box:
        items: list[int]

    box = Box([1])
    copied = _codec.copy_value(box)
    assert copied is not box and copied.items is not box.items, "a mutable field forces a copy"
    assert copied == box, "same value"


def test_copy_keeps_handles_as_the_same_object() -> None:
    stub = FakeStub("rooms", "ab" * 32, "lobby")
    copied = _codec.copy_value({"peer": stub})
    assert copied["peer"] is stub, "a stub is a reference, not a copy"


def test_copy_of_a_subclass_gives_the_builtin() -> None:
    class MyList(list[int]):
        pass

    copied = _codec.copy_value(MyList([1]))
    assert same([1], copied), f"got {copied!r}"


def test_request_and_response_cross_as_values() -> None:
    request = td.Request(method="POST", url="http://h/p?x=1", headers={"A": "1"}, body=b"hi")
    assert _codec.copy_value(request) is request, "a Request is immutable: shared"
    data = _codec.encode_call(request)
    back = _codec.decode_call(data, allowed=_codec.allow(td.Request, td.Response))
    assert back == request and type(back.headers) is Headers, f"got {back!r}"
    response = td.Response.text("ok", status=201)
    data = _codec.encode_call(response)
    back = _codec.decode_call(data, allowed=_codec.allow(td.Request, td.Response))
    assert back == response, f"got {back!r}"


# ------------------------------------------------------------------ across processes


def test_call_encoding_rebuilds_allowed_records() -> None:
    value = {"who": Member("ada", [1]), "at": Tagged(Point(1, 2), ("t",)), "c": Color.RED}
    data = _codec.encode_call(value)
    back = _codec.decode_call(data, allowed=_codec.allow(Member, Tagged, Point, Color))
    assert back == value, f"got {back!r}"
    assert type(back["who"]) is Member and back["c"] is Color.RED, "classes kept"


def test_call_decoding_refuses_a_class_not_allowed() -> None:
    data = _codec.encode_call([Member("ada")])
    with pytest.raises(TypeError, match=r"^result: a record of class .*Member arrived"):
        _codec.decode_call(data, allowed=_codec.allow(Point), where="result")


def test_call_decoding_never_looks_classes_up_by_name() -> None:
    # Same name, different class: only the mapping decides what is built.
    @attrs.frozen
    class OtherPoint:
        x: int
        y: int

    data = _codec.encode_call(Point(1, 2))
    back = _codec.decode_call(data, allowed={_codec.class_name(Point): OtherPoint})
    assert back == OtherPoint(1, 2), "the receiver's class was used, nothing was imported"


def test_call_decoding_tolerates_another_version_of_the_class() -> None:
    @attrs.define
    class V1:
        name: str
        gone: int = 0

    @attrs.define
    class V2:
        name: str
        added: list[int] = attrs.Factory(list)

    data = _codec.encode_call(V1("ada", 5))
    back = _codec.decode_call(data, allowed={_codec.class_name(V1): V2})
    assert back == V2("ada", []), f"unknown field ignored, new one defaulted: {back!r}"


def test_stub_crosses_as_a_reference_through_the_callback() -> None:
    stub = FakeStub("rooms", "cd" * 32, None)
    seen = []

    def resolve(kind: str, ref: Any) -> Any:
        seen.append((kind, ref))
        return "rebuilt"

    back = _codec.decode_call(_codec.encode_call([stub]), resolve_handle=resolve)
    assert back == ["rebuilt"], "the callback's result stands for the stub"
    assert seen == [("stub", ("rooms", "cd" * 32, None))], "(namespace, 64-hex id, name)"


def test_stub_without_a_resolver_is_refused() -> None:
    data = _codec.encode_call(FakeStub("rooms", "ef" * 32, "x"))
    with pytest.raises(TypeError, match="the receiver takes no handles"):
        _codec.decode_call(data)


def test_stub_cannot_be_stored() -> None:
    with pytest.raises(TypeError, match=r"^value\[0\] is a stub .*cannot be stored"):
        _codec.encode([FakeStub("rooms", "00" * 32, None)])


def test_headers_round_trip_in_storage() -> None:
    headers = Headers([("X-A", "1"), ("x-a", "2")])
    back = _codec.decode(_codec.encode(headers))
    assert type(back) is Headers and back.items_raw() == headers.items_raw(), f"got {back!r}"


def test_copy_matches_the_call_round_trip() -> None:
    value = [Member("a", [1]), {(1, 2): {Point(0, 1)}}, Color.RED, bytearray(b"z")]
    copied = _codec.copy_value(value)
    crossed = _codec.decode_call(
        _codec.encode_call(value), allowed=_codec.allow(Member, Point, Color)
    )
    assert same(crossed, copied), f"in process {copied!r}, across {crossed!r}"
