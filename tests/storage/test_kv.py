"""The key-value API: get, put, delete, list, delete_all, sync, types."""

from __future__ import annotations

from typing import Any

import pytest

import trio_durable as td
from trio_durable.testing import evict, list_object_ids, run_in_object

from .objects import OBJECTS, Member


async def test_get_returns_what_put_stored(box: td.Stub) -> None:
    await box.put("k", {"a": [1, 2]})
    assert await box.get("k") == {"a": [1, 2]}, "a stored value reads back"


async def test_get_of_missing_key_is_none(box: td.Stub) -> None:
    assert None is await box.get("nothing"), "a missing key reads as None"


async def test_get_many_returns_found_keys_ordered_by_key(box: td.Stub) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> Any:
        await ctx.storage.put({"b": 2, "a": 1, "c": 3})
        return await ctx.storage.get(["c", "missing", "a"])

    result = await run_in_object(box, body)
    assert list(result.items()) == [("a", 1), ("c", 3)], "found keys only, in key order"


async def test_get_with_type_structures_attrs_instances(box: td.Stub) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> Any:
        await ctx.storage.put("m", Member("ada", 3))
        return await ctx.storage.get("m", type=Member), await ctx.storage.get("m")

    typed, raw = await run_in_object(box, body)
    assert Member("ada", 3) == typed, "type= gives back the attrs instance"
    assert raw == {"name": "ada", "score": 3}, "without type= the plain data comes back"


async def test_get_returns_a_fresh_copy_each_time(box: td.Stub) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> Any:
        await ctx.storage.put("l", [1])
        first = await ctx.storage.get("l")
        first.append(2)
        return await ctx.storage.get("l")

    assert await run_in_object(box, body) == [1], "mutating a read value changes nothing stored"


async def test_put_mapping_writes_every_entry(box: td.Stub) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> Any:
        await ctx.storage.put({"x": 1, "y": 2})
        return await ctx.storage.list()

    assert await run_in_object(box, body) == {"x": 1, "y": 2}, "both entries are stored"


async def test_delete_reports_whether_the_key_existed(box: td.Stub) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> Any:
        await ctx.storage.put("k", 1)
        return await ctx.storage.delete("k"), await ctx.storage.delete("k")

    assert await run_in_object(box, body) == (True, False), "True the first time, then False"


async def test_delete_many_counts_existing_keys(box: td.Stub) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> Any:
        await ctx.storage.put({"a": 1, "b": 2})
        count = await ctx.storage.delete(["a", "b", "zzz"])
        return count, await ctx.storage.list()

    assert await run_in_object(box, body) == (2, {}), "two existed and both are gone"


async def test_delete_of_committed_key_survives_eviction(box: td.Stub) -> None:
    await box.put("k", 1)

    async def delete(obj: Any, ctx: td.ObjectContext) -> Any:
        return await ctx.storage.delete("k")

    assert True is await run_in_object(box, delete), "the committed key existed"
    await evict(box)
    assert None is await box.get("k"), "the deletion was committed"


async def test_values_survive_eviction(box: td.Stub) -> None:
    await box.put("k", "v")
    await evict(box)
    assert await box.get("k") == "v", "a new instance reads the committed value"


async def test_values_survive_runtime_restart(runtime_factory: Any) -> None:
    async with runtime_factory(objects=OBJECTS) as rt:
        await rt.namespace("boxes").get_by_name("r").put("k", [1, "two"])
    async with runtime_factory(objects=OBJECTS) as rt:
        value = await rt.namespace("boxes").get_by_name("r").get("k")
    assert value == [1, "two"], "the value is read back from disk after a restart"


async def test_objects_are_isolated(runtime: td.Runtime) -> None:
    boxes = runtime.namespace("boxes")
    await boxes.get_by_name("one").put("k", 1)
    assert None is await boxes.get_by_name("two").get("k"), "another object sees nothing"


async def test_object_holding_data_is_listed(runtime: td.Runtime) -> None:
    boxes = runtime.namespace("boxes")
    await boxes.get_by_name("holder").put("k", 1)
    ids = await list_object_ids(boxes)
    assert [boxes.id_from_name("holder")] == ids, "the object that wrote is listed"


async def test_delete_all_removes_every_key(box: td.Stub) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> Any:
        await ctx.storage.put({"a": 1, "b": 2})
        await ctx.storage.delete_all()
        return await ctx.storage.list(), await ctx.storage.get("a")

    assert await run_in_object(box, body) == ({}, None), "nothing is left"


async def test_delete_all_then_put_keeps_only_the_new_key(box: td.Stub) -> None:
    await box.put("old", 1)

    async def body(obj: Any, ctx: td.ObjectContext) -> Any:
        await ctx.storage.delete_all()
        await ctx.storage.put("new", 2)

    await run_in_object(box, body)
    await evict(box)

    async def read(obj: Any, ctx: td.ObjectContext) -> Any:
        return await ctx.storage.list()

    assert await run_in_object(box, read) == {"new": 2}, "old keys stay deleted after commit"


async def test_sync_waits_for_the_commit(runtime: td.Runtime, box: td.Stub) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> Any:
        await ctx.storage.put("k", 1)
        before = obj.ctx._record.output_gate.is_open
        await ctx.storage.sync()
        return before, obj.ctx._record.output_gate.is_open

    assert await run_in_object(box, body) == (False, True), "sync() returns once committed"


# ------------------------------------------------------------------- list()


@pytest.fixture
async def listed(box: td.Stub) -> td.Stub:
    async def body(obj: Any, ctx: td.ObjectContext) -> None:
        await ctx.storage.put({"a": 1, "b": 2, "ba": 3, "bb": 4, "c": 5, "é": 6})

    await run_in_object(box, body)
    return box


async def _list(stub: td.Stub, **kwargs: Any) -> list[str]:
    async def body(obj: Any, ctx: td.ObjectContext) -> Any:
        return list(await ctx.storage.list(**kwargs))

    return await run_in_object(stub, body)  # type: ignore[no-any-return]


async def test_list_orders_by_utf8_bytes(listed: td.Stub) -> None:
    assert await _list(listed) == ["a", "b", "ba", "bb", "c", "é"], "byte order of UTF-8"


async def test_list_start_is_inclusive(listed: td.Stub) -> None:
    assert await _list(listed, start="ba") == ["ba", "bb", "c", "é"], "start key included"


async def test_list_end_is_exclusive(listed: td.Stub) -> None:
    assert await _list(listed, end="bb") == ["a", "b", "ba"], "end key excluded"


async def test_list_start_after_is_exclusive(listed: td.Stub) -> None:
    assert await _list(listed, start_after="ba") == ["bb", "c", "é"], "start_after excluded"


async def test_list_prefix(listed: td.Stub) -> None:
    assert await _list(listed, prefix="b") == ["b", "ba", "bb"], "only keys with the prefix"


async def test_list_reverse_with_limit_keeps_the_last_keys(listed: td.Stub) -> None:
    assert await _list(listed, reverse=True, limit=2) == ["é", "c"], "descending, two keys"


async def test_list_limit(listed: td.Stub) -> None:
    assert await _list(listed, limit=2) == ["a", "b"], "the first two keys"


async def test_list_limit_skips_deleted_keys(listed: td.Stub) -> None:
    await evict(listed)  # everything committed; the deletion below is not yet

    async def body(obj: Any, ctx: td.ObjectContext) -> Any:
        await ctx.storage.delete(["a", "b"])
        return list(await ctx.storage.list(limit=2))

    assert await run_in_object(listed, body) == ["ba", "bb"], "deleted keys do not use the limit"


async def test_list_empty_range(listed: td.Stub) -> None:
    assert await _list(listed, start="c", end="b") == [], "start after end lists nothing"


async def test_list_with_type(box: td.Stub) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> Any:
        await ctx.storage.put({"m1": Member("a"), "m2": Member("b")})
        return await ctx.storage.list(prefix="m", type=Member)

    result = await run_in_object(box, body)
    assert {"m1": Member("a"), "m2": Member("b")} == result, "values are structured"
