"""RPC copies values: caller and object never share a mutable value."""

from __future__ import annotations

import datetime
import threading
from typing import Any

import attrs
import pytest

import trio_durable as td


@attrs.define
class Point:
    x: int
    y: list[int] = attrs.field(factory=list)


@attrs.frozen
class Frozen:
    name: str
    tags: tuple[str, ...] = ()


@attrs.define(eq=False)
class Keeper(td.DurableObject):
    items: list[Any] = attrs.field(factory=list)
    kept: Any = None

    async def add(self, item: Any) -> list[Any]:
        self.items.append(item)
        return self.items

    async def keep(self, value: Any) -> None:
        self.kept = value

    async def kept_value(self) -> Any:
        return self.kept

    async def mutate_kept(self) -> None:
        self.kept.append("changed by the object")

    async def kind(self, value: Any) -> str:
        return type(value).__name__

    async def same(self, a: Any, b: Any) -> bool:
        return a is b

    async def give_function(self) -> Any:
        return lambda: None

    async def call_other(self, stub: td.Stub) -> int:
        return len(await stub.add("via a stub argument"))

    async def echo(self, *args: Any, **kwargs: Any) -> Any:
        return args, kwargs


OBJECTS = {"keepers": Keeper}


@pytest.fixture
async def keeper(runtime_factory: Any) -> Any:
    async with runtime_factory(objects=OBJECTS) as runtime:
        yield runtime.namespace("keepers").get_by_name("k")


async def test_mutating_a_result_does_not_change_the_object(keeper: td.Stub) -> None:
    items = await keeper.add("a")
    items.append("added by the caller")
    assert await keeper.add("b") == ["a", "b"], "the object's list is its own"


async def test_mutating_an_argument_after_the_call_does_not_change_the_object(
    keeper: td.Stub,
) -> None:
    mine = ["x"]
    await keeper.keep(mine)
    mine.append("changed by the caller")
    assert await keeper.kept_value() == ["x"]


async def test_the_object_mutating_its_copy_does_not_change_the_caller(keeper: td.Stub) -> None:
    mine = ["x"]
    await keeper.keep(mine)
    await keeper.mutate_kept()
    assert mine == ["x"], "the caller's list is untouched"


async def test_attrs_instances_keep_their_class_across_rpc(keeper: td.Stub) -> None:
    point = Point(1, [2])
    await keeper.keep(point)
    point.y.append(3)
    back = await keeper.kept_value()
    assert type(back) is Point and back == Point(1, [2]), back


async def test_values_round_trip_as_themselves(keeper: td.Stub) -> None:
    value = {
        (1, 2): {b"\x00\x01", frozenset({3})},
        "when": datetime.datetime(2026, 11, 27, tzinfo=datetime.UTC),
        "big": 2**100,
        "ba": bytearray(b"ab"),
    }
    await keeper.keep(value)
    back = await keeper.kept_value()
    assert back == value and back is not value
    assert type(back["ba"]) is bytearray


async def test_immutable_arguments_are_shared_not_copied(keeper: td.Stub) -> None:
    frozen = Frozen("f", ("a", "b"))
    assert await keeper.same(frozen, frozen) is True, "one object stays one object"


async def test_a_mutable_argument_passed_twice_arrives_as_copies(keeper: td.Stub) -> None:
    shared: list[int] = []
    assert await keeper.same(shared, shared) is False


async def test_a_function_argument_is_refused_with_its_place(keeper: td.Stub) -> None:
    with pytest.raises(TypeError, match=r"""args\[0\]\["callback"\] is a function"""):
        await keeper.keep({"callback": lambda: None})


async def test_a_lock_in_a_keyword_argument_is_refused_with_its_place(keeper: td.Stub) -> None:
    with pytest.raises(TypeError, match=r"kwargs\[.lock.\]"):
        await keeper.echo(lock=threading.Lock())


async def test_a_refused_argument_does_not_activate_the_object(runtime_factory: Any) -> None:
    async with runtime_factory(objects=OBJECTS) as runtime:
        stub = runtime.namespace("keepers").get_by_name("never")
        with pytest.raises(TypeError, match="RPC values must be data"):
            await stub.keep(object())
        assert runtime.statistics().activations == 0, "refused before anything was sent"


async def test_a_result_that_is_not_data_is_refused(keeper: td.Stub) -> None:
    with pytest.raises(TypeError, match="result is a function"):
        await keeper.give_function()


async def test_a_cycle_is_refused(keeper: td.Stub) -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(TypeError, match="cycle"):
        await keeper.keep(loop)


async def test_a_stub_argument_stays_a_reference_to_its_object(runtime_factory: Any) -> None:
    async with runtime_factory(objects=OBJECTS) as runtime:
        keepers = runtime.namespace("keepers")
        a, b = keepers.get_by_name("a"), keepers.get_by_name("b")
        assert await a.call_other(b) == 1
        assert await b.add("direct") == ["via a stub argument", "direct"]


async def test_requests_and_responses_cross_rpc(keeper: td.Stub) -> None:
    request = td.Request(method="POST", url="http://h/p?x=1", headers={"a": "b"}, body=b"hi")
    await keeper.keep(request)
    assert await keeper.kept_value() == request
    assert await keeper.kind(td.Response.text("ok")) == "Response"
