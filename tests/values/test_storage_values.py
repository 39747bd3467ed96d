"""Stored values round-trip through ``ctx.storage``: the cache, SQLite and a restart.

Every test here goes through the public API on a real SQLite data dir. The
value codec itself is tested in ``test_roundtrip.py`` and ``test_records.py``;
these tests check that storage uses it all the way: a value read back after
an eviction comes from SQLite, one read after a restart from a new runtime.
"""

from __future__ import annotations

import datetime
import decimal
import io
import sqlite3
import tempfile
import uuid
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trio_durable as td
from trio_durable.testing import evict, run_in_object

from ._same import fixed_zones, same
from ._strategies import storable


@attrs.define(eq=False)
class Keeper(td.DurableObject):
    """Storage is used through ``run_in_object``; the class itself holds nothing."""


OBJECTS: dict[str, type[td.DurableObject]] = {"keepers": Keeper}


@attrs.define
class Member:
    name: str
    score: int = 0


@attrs.define
class MemberV2:
    """``Member`` one deploy later: ``score`` removed, ``joined`` added with a default."""

    name: str
    joined: datetime.date = datetime.date(2000, 1, 1)


@attrs.frozen
class Event:
    when: datetime.datetime
    tags: frozenset[str]
    blob: bytes
    amount: decimal.Decimal
    id: uuid.UUID


async def _put(stub: td.Stub, entries: dict[str, Any]) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> None:
        await ctx.storage.put(entries)

    await run_in_object(stub, body)


async def _get(stub: td.Stub, keys: list[str], type: Any = None) -> dict[str, Any]:
    async def body(obj: Any, ctx: td.ObjectContext) -> dict[str, Any]:
        return {key: await ctx.storage.get(key, type=type) for key in keys}

    return await run_in_object(stub, body)


async def _list(stub: td.Stub, type: Any = None) -> dict[str, Any]:
    async def body(obj: Any, ctx: td.ObjectContext) -> dict[str, Any]:
        return await ctx.storage.list(type=type)

    return await run_in_object(stub, body)


# --------------------------------------------------------------- round trips


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(storable, min_size=1, max_size=4))
async def test_values_round_trip_through_eviction_and_restart(entries: list[Any]) -> None:
    stored = {f"k{i}": value for i, value in enumerate(entries)}
    with tempfile.TemporaryDirectory() as tmp:
        async with td.open_runtime(OBJECTS, tmp) as rt:
            stub = rt.namespace("keepers").get_by_name("k")
            await _put(stub, stored)
            cached = await _get(stub, list(stored))
            assert await evict(stub), "the object was live, and is evicted"
            from_sqlite = await _get(stub, list(stored))
        async with td.open_runtime(OBJECTS, tmp) as rt:
            stub = rt.namespace("keepers").get_by_name("k")
            after_restart = await _get(stub, list(stored))
            listed = await _list(stub)
    expected = fixed_zones(stored)  # a zone is kept as its fixed offset
    assert same(expected, cached), f"{stored!r} read back from the cache as {cached!r}"
    assert same(expected, from_sqlite), f"{stored!r} read back after eviction as {from_sqlite!r}"
    assert same(expected, after_restart), f"{stored!r} read back after restart as {after_restart!r}"
    assert same(expected, listed), f"{stored!r} listed after restart as {listed!r}"


async def test_get_returns_a_fresh_copy_each_time(runtime_factory: Any) -> None:
    async with runtime_factory(objects=OBJECTS) as rt:

        async def body(obj: Any, ctx: td.ObjectContext) -> Any:
            value = {"s": {1}, "l": [b"x"]}
            await ctx.storage.put("k", value)
            value["l"].append(b"after put")
            first = await ctx.storage.get("k")
            first["s"].add(2)
            return await ctx.storage.get("k")

        back = await run_in_object(rt.namespace("keepers").get_by_name("k"), body)
    assert same({"s": {1}, "l": [b"x"]}, back), f"neither the put nor a get shared it: {back!r}"


# --------------------------------------------------------------- attrs records


async def test_record_without_type_comes_back_as_a_dict_of_its_fields(
    runtime_factory: Any,
) -> None:
    async with runtime_factory(objects=OBJECTS) as rt:
        stub = rt.namespace("keepers").get_by_name("k")
        await _put(stub, {"m": Member("ada", 7)})
        await evict(stub)
        back = await _get(stub, ["m"])
    assert same({"m": {"name": "ada", "score": 7}}, back), f"got {back!r}"


async def test_record_fields_keep_their_types_in_the_dict(runtime_factory: Any) -> None:
    event = Event(
        when=datetime.datetime(
            2024, 5, 1, 12, tzinfo=datetime.timezone(-datetime.timedelta(hours=5))
        ),
        tags=frozenset({"a", "b"}),
        blob=b"\x00\xff",
        amount=decimal.Decimal("-0.10"),
        id=uuid.UUID(int=7),
    )
    async with runtime_factory(objects=OBJECTS) as rt:
        stub = rt.namespace("keepers").get_by_name("k")
        await _put(stub, {"e": event})
        await evict(stub)
        back = (await _get(stub, ["e"]))["e"]
    assert same(attrs.asdict(event, recurse=False), back), f"got {back!r}"


async def test_type_brings_a_record_back_as_its_class(runtime_factory: Any) -> None:
    async with runtime_factory(objects=OBJECTS) as rt:
        stub = rt.namespace("keepers").get_by_name("k")
        await _put(stub, {"m": Member("ada", 7)})
        await evict(stub)
        back = await _get(stub, ["m"], type=Member)
    assert back == {"m": Member("ada", 7)}, f"got {back!r}"


async def test_type_ignores_removed_fields_and_defaults_new_ones(runtime_factory: Any) -> None:
    async with runtime_factory(objects=OBJECTS) as rt:
        stub = rt.namespace("keepers").get_by_name("k")
        await _put(stub, {"m": Member("ada", 7)})
        await evict(stub)
        back = await _get(stub, ["m"], type=MemberV2)
    assert back == {"m": MemberV2("ada")}, f"score ignored, joined defaulted: {back!r}"


async def test_type_structures_native_field_values(runtime_factory: Any) -> None:
    event = Event(
        when=datetime.datetime(2024, 5, 1, 12, 30, 1, 5),
        tags=frozenset({"x"}),
        blob=b"\x00\x01",
        amount=decimal.Decimal("1.10"),
        id=uuid.UUID(int=5),
    )
    async with runtime_factory(objects=OBJECTS) as rt:
        stub = rt.namespace("keepers").get_by_name("k")
        await _put(stub, {"e": event})
        await evict(stub)
        back = (await _get(stub, ["e"], type=Event))["e"]
    assert event == back, f"got {back!r}"


async def test_get_many_with_type_structures_each_value(runtime_factory: Any) -> None:
    async with runtime_factory(objects=OBJECTS) as rt:
        stub = rt.namespace("keepers").get_by_name("k")
        await _put(stub, {"a": Member("a", 1), "b": Member("b", 2)})

        async def body(obj: Any, ctx: td.ObjectContext) -> Any:
            return await ctx.storage.get(["b", "a", "missing"], type=Member)

        back = await run_in_object(stub, body)
    assert back == {"a": Member("a", 1), "b": Member("b", 2)}, f"got {back!r}"


async def test_list_with_type_structures_each_value(runtime_factory: Any) -> None:
    async with runtime_factory(objects=OBJECTS) as rt:
        stub = rt.namespace("keepers").get_by_name("k")
        await _put(stub, {"a": Member("a", 1), "b": Member("b", 2)})
        await evict(stub)
        back = await _list(stub, type=Member)
    assert back == {"a": Member("a", 1), "b": Member("b", 2)}, f"got {back!r}"


async def test_transaction_reads_and_writes_go_through_the_codec(runtime_factory: Any) -> None:
    async with runtime_factory(objects=OBJECTS) as rt:
        stub = rt.namespace("keepers").get_by_name("k")
        await _put(stub, {"m": Member("ada", 7)})

        async def body(obj: Any, ctx: td.ObjectContext) -> Any:
            async with ctx.storage.transaction() as txn:
                member = await txn.get("m", type=Member)
                await txn.put("seen", {(member.name, member.score): {b"raw"}})
                return member, await txn.get("seen"), await txn.list(prefix="m", type=Member)

        inside = await run_in_object(stub, body)
        await evict(stub)
        after = await _get(stub, ["seen"])
    expected = (Member("ada", 7), {("ada", 7): {b"raw"}}, {"m": Member("ada", 7)})
    assert inside[0] == expected[0], f"txn.get(type=) gave {inside[0]!r}"
    assert same(expected[1], inside[1]), f"txn.get of its own write gave {inside[1]!r}"
    assert inside[2] == expected[2], f"txn.list(type=) gave {inside[2]!r}"
    assert same({"seen": expected[1]}, after), f"committed, then read from SQLite: {after!r}"


# --------------------------------------------------------------- refused values


async def _refused(stub: td.Stub, fn: Any) -> BaseException:
    async def body(obj: Any, ctx: td.ObjectContext) -> BaseException:
        with pytest.raises((TypeError, ValueError)) as info:  # LimitExceededError too
            await fn(ctx.storage)
        return info.value

    return await run_in_object(stub, body)


async def test_unsupported_value_is_a_type_error_with_its_path(runtime_factory: Any) -> None:
    async with runtime_factory(objects=OBJECTS) as rt:
        stub = rt.namespace("keepers").get_by_name("k")
        exc = await _refused(stub, lambda s: s.put("k", {"a": [lambda: 1]}))
    assert isinstance(exc, TypeError), f"a TypeError, got {exc!r}"
    expected = "value for key 'k'[\"a\"][0] is a function (a lambda); stored values must be data"
    assert expected == str(exc), "names the type and where it sits"


async def test_unsupported_value_leaves_the_old_value(runtime_factory: Any) -> None:
    async with runtime_factory(objects=OBJECTS) as rt:
        stub = rt.namespace("keepers").get_by_name("k")
        await _put(stub, {"k": "old"})
        await _refused(stub, lambda s: s.put("k", {"a": [lambda: 1]}))
        in_memory = await _get(stub, ["k"])
        await evict(stub)
        on_disk = await _get(stub, ["k"])
    assert in_memory == {"k": "old"}, f"the cache kept the old value: {in_memory!r}"
    assert on_disk == {"k": "old"}, f"SQLite kept the old value: {on_disk!r}"


async def test_one_unsupported_value_in_a_mapping_writes_none_of_it(
    runtime_factory: Any, durable_data_dir: Path
) -> None:
    async with runtime_factory(objects=OBJECTS) as rt:
        stub = rt.namespace("keepers").get_by_name("k")
        await _put(stub, {"a": "old a"})
        exc = await _refused(stub, lambda s: s.put({"a": "new a", "b": 2, "c": [open]}))
        await evict(stub)
        back = await _get(stub, ["a", "b", "c"])
    assert "value for key 'c'[0] is a function" in str(exc), f"names key and place: {exc}"
    assert back == {"a": "old a", "b": None, "c": None}, f"nothing of the put landed: {back!r}"
    assert _kv_keys(durable_data_dir) == ["a"], "nothing of it reached the database"


async def test_unsupported_value_in_a_transaction_writes_nothing(runtime_factory: Any) -> None:
    async with runtime_factory(objects=OBJECTS) as rt:
        stub = rt.namespace("keepers").get_by_name("k")
        await _put(stub, {"k": "old"})

        async def body(obj: Any, ctx: td.ObjectContext) -> None:
            async with ctx.storage.transaction() as txn:
                await txn.put("other", 1)
                await txn.put("k", {"file": io.BytesIO()})

        with pytest.raises(TypeError, match=r"value for key 'k'\[\"file\"\] is an open file"):
            await run_in_object(stub, body)
        await evict(stub)
        back = await _get(stub, ["k", "other"])
    assert back == {"k": "old", "other": None}, f"the transaction left nothing: {back!r}"


async def test_none_is_refused_and_the_key_kept(runtime_factory: Any) -> None:
    async with runtime_factory(objects=OBJECTS) as rt:
        stub = rt.namespace("keepers").get_by_name("k")
        await _put(stub, {"k": 1})
        exc = await _refused(stub, lambda s: s.put("k", None))
        back = await _get(stub, ["k"])
    assert isinstance(exc, TypeError), f"a TypeError, got {exc!r}"
    assert "cannot store None under 'k'; use delete()" in str(exc), f"says what to do: {exc}"
    assert back == {"k": 1}, f"the key kept its value: {back!r}"


async def test_handle_cannot_be_stored(runtime_factory: Any) -> None:
    async with runtime_factory(objects=OBJECTS) as rt:
        stub = rt.namespace("keepers").get_by_name("k")
        other = rt.namespace("keepers").get_by_name("other")
        exc = await _refused(stub, lambda s: s.put("peer", {"stub": other}))
    assert isinstance(exc, TypeError), f"a TypeError, got {exc!r}"
    assert "value for key 'peer'[\"stub\"] is a stub" in str(exc), f"names the stub: {exc}"


# --------------------------------------------------------------- the bytes on disk


async def test_limit_counts_the_encoded_size(runtime_factory: Any) -> None:
    # b"x" * n encodes as the format byte, a 2-byte MessagePack bin header, n bytes.
    async with runtime_factory(objects=OBJECTS, max_value_bytes=100) as rt:
        stub = rt.namespace("keepers").get_by_name("k")
        await _put(stub, {"fits": b"x" * 97})
        exc = await _refused(stub, lambda s: s.put("over", b"x" * 98))
    assert isinstance(exc, td.LimitExceededError), f"LimitExceededError, got {exc!r}"
    expected = "value for key 'over' is 101 bytes serialized; the limit is 100"
    assert expected == str(exc), "names the encoded size and the limit"


async def test_stored_rows_start_with_the_format_byte(
    runtime_factory: Any, durable_data_dir: Path
) -> None:
    async with runtime_factory(objects=OBJECTS) as rt:
        await _put(rt.namespace("keepers").get_by_name("k"), {"s": "text", "n": 1, "b": b""})
    firsts = {key: value[0] for key, value in _kv_rows(durable_data_dir).items()}
    assert firsts == {"b": 0x01, "n": 0x01, "s": 0x01}, f"first bytes: {firsts}"


def _kv_rows(data_dir: Path) -> dict[str, bytes]:
    db = sqlite3.connect(data_dir / "trio_durable.sqlite3")
    try:
        return dict(db.execute("SELECT key, value FROM _td_kv ORDER BY key"))
    finally:
        db.close()


def _kv_keys(data_dir: Path) -> list[str]:
    return list(_kv_rows(data_dir))
