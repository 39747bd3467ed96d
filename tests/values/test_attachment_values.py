"""WebSocket attachments round-trip through the value codec, across hibernation.

The object attaches a value to a hibernatable socket (the in-memory client
of ``trio_durable.testing``), is evicted, and a message on the socket wakes
a new instance that reads the attachment back.
"""

from __future__ import annotations

import datetime
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings

import trio_durable as td
from trio_durable.testing import evict, open_websocket, run_in_object

from ._same import fixed_zones, same
from ._strategies import values


@attrs.define
class Member:
    name: str
    score: int = 0


@attrs.define
class MemberV2:
    """``Member`` one deploy later: ``score`` removed, ``joined`` added with a default."""

    name: str
    joined: datetime.date = datetime.date(2000, 1, 1)


#: A message names the ``type=`` its handler reads the attachment with.
READ_AS: dict[str, Any] = {"plain": None, "Member": Member, "MemberV2": MemberV2}
_NOTHING = object()


@attrs.define(eq=False)
class Holder(td.DurableObject):
    """Accepts one hibernatable socket; a message reads its attachment (``type=`` by name)."""

    seen: Any = _NOTHING

    async def fetch(self, request: td.Request) -> td.Response:
        client, server = td.WebSocketPair()
        self.ctx.accept_websocket(server)
        return td.Response.websocket(client)

    async def websocket_message(self, ws: td.WebSocket, message: str | bytes) -> None:
        self.seen = ws.deserialize_attachment(READ_AS[str(message)])
        await ws.send("read")


OBJECTS: dict[str, type[td.DurableObject]] = {"holders": Holder}


async def _attach(stub: td.Stub, value: Any) -> Holder:
    def body(obj: Holder, ctx: td.ObjectContext) -> Holder:
        [ws] = ctx.get_websockets()
        ws.serialize_attachment(value)
        return obj

    return await run_in_object(stub, body)


async def _read_after_hibernation(
    stub: td.Stub, client: td.WebSocket, read_as: str = "plain"
) -> Any:
    """Evict the object, wake it with a message, and return what the new instance read."""

    def instance(obj: Holder, ctx: td.ObjectContext) -> tuple[Holder, Any]:
        return obj, obj.seen

    before, _ = await run_in_object(stub, instance)
    assert await evict(stub), "the object was live, and is evicted"
    await client.send(read_as)
    assert await client.receive() == "read", "the woken object answered"
    woken, value = await run_in_object(stub, instance)
    assert woken is not before, "a new instance read the attachment"
    return value


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values.filter(lambda value: value is not None))
async def test_attachments_round_trip_across_hibernation(value: Any) -> None:
    async with td.open_runtime(OBJECTS) as rt:
        stub = rt.namespace("holders").get_by_name("h")
        async with open_websocket(stub) as client:
            await _attach(stub, value)
            back = await _read_after_hibernation(stub, client)
    assert same(fixed_zones(value), back), f"{value!r} came back as {back!r}"


async def test_attachment_is_a_copy_taken_at_the_call(runtime_factory: Any) -> None:
    value = {"items": [1], "seen": {b"a"}}
    async with runtime_factory(objects=OBJECTS) as rt:
        stub = rt.namespace("holders").get_by_name("h")
        async with open_websocket(stub) as client:
            await _attach(stub, value)
            value["items"].append(2)
            back = await _read_after_hibernation(stub, client)
    assert same({"items": [1], "seen": {b"a"}}, back), f"later changes not kept: {back!r}"


async def test_record_attachment_comes_back_as_a_dict(runtime_factory: Any) -> None:
    async with runtime_factory(objects=OBJECTS) as rt:
        stub = rt.namespace("holders").get_by_name("h")
        async with open_websocket(stub) as client:
            await _attach(stub, Member("ada", 7))
            back = await _read_after_hibernation(stub, client)
    assert same({"name": "ada", "score": 7}, back), f"got {back!r}"


async def test_type_brings_a_record_attachment_back_as_its_class(runtime_factory: Any) -> None:
    async with runtime_factory(objects=OBJECTS) as rt:
        stub = rt.namespace("holders").get_by_name("h")
        async with open_websocket(stub) as client:
            await _attach(stub, Member("ada", 7))
            back = await _read_after_hibernation(stub, client, "Member")
    assert back == Member("ada", 7), f"got {back!r}"


async def test_type_evolves_a_record_attachment(runtime_factory: Any) -> None:
    async with runtime_factory(objects=OBJECTS) as rt:
        stub = rt.namespace("holders").get_by_name("h")
        async with open_websocket(stub) as client:
            await _attach(stub, Member("ada", 7))
            back = await _read_after_hibernation(stub, client, "MemberV2")
    assert back == MemberV2("ada"), f"score ignored, joined defaulted: {back!r}"


async def _refuse(stub: td.Stub, old: Any, new: Any) -> tuple[BaseException, Any]:
    """Attach ``old``, try ``new``; the error and what the socket holds afterwards."""

    def body(obj: Holder, ctx: td.ObjectContext) -> tuple[BaseException, Any]:
        [ws] = ctx.get_websockets()
        ws.serialize_attachment(old)
        with pytest.raises((TypeError, ValueError)) as info:  # LimitExceededError too
            ws.serialize_attachment(new)
        return info.value, ws.deserialize_attachment()

    return await run_in_object(stub, body)


async def test_unsupported_attachment_is_a_type_error_with_its_path(
    runtime_factory: Any,
) -> None:
    async with runtime_factory(objects=OBJECTS) as rt:
        stub = rt.namespace("holders").get_by_name("h")
        async with open_websocket(stub):
            exc, _ = await _refuse(stub, "old", {"a": [lambda: 1]})
    assert isinstance(exc, TypeError), f"a TypeError, got {exc!r}"
    expected = 'attachment["a"][0] is a function (a lambda); stored values must be data'
    assert expected == str(exc), "names the type and where it sits"


async def test_unsupported_attachment_keeps_the_previous_one(runtime_factory: Any) -> None:
    async with runtime_factory(objects=OBJECTS) as rt:
        stub = rt.namespace("holders").get_by_name("h")
        async with open_websocket(stub):
            _, kept = await _refuse(stub, {"old": (1, 2)}, {"a": [lambda: 1]})
    assert same({"old": (1, 2)}, kept), f"the previous attachment stays: {kept!r}"


async def test_attachment_limit_counts_the_encoded_size(runtime_factory: Any) -> None:
    # b"x" * n encodes as the format byte, a 2-byte MessagePack bin header, n bytes.
    async with runtime_factory(objects=OBJECTS, max_attachment_bytes=100) as rt:
        stub = rt.namespace("holders").get_by_name("h")
        async with open_websocket(stub):
            exc, kept = await _refuse(stub, b"x" * 97, b"x" * 98)
    assert isinstance(exc, td.LimitExceededError), f"LimitExceededError, got {exc!r}"
    expected = "attachment is 101 bytes serialized; the limit is 100"
    assert expected == str(exc), "names the encoded size and the limit"
    assert kept == b"x" * 97, "the 100-byte attachment (exactly the limit) stays"
