"""The key-value cache: one byte budget for every live object of a runtime, LRU."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import trio_durable as td
from trio_durable import _codec
from trio_durable._storage._cache import ENTRY_OVERHEAD, CacheBudget
from trio_durable.testing import evict, run_in_object

from .objects import OBJECTS, ControlledBackend

VALUE = "v" * 1000
#: What one entry of ``VALUE`` costs the budget ("k000" keys, the encoded value).
ENTRY = ENTRY_OVERHEAD + 4 + len(_codec.encode(VALUE))
BUDGET = 40 * ENTRY


@pytest.fixture
async def small(tmp_path: Path) -> AsyncIterator[tuple[td.Runtime, ControlledBackend]]:
    """A runtime whose caches may hold 40 entries of ``VALUE`` together."""
    backend = ControlledBackend(tmp_path)
    async with td.open_runtime(OBJECTS, backend=backend, storage_cache_bytes=BUDGET) as rt:
        yield rt, backend


def _budget(rt: td.Runtime) -> CacheBudget:
    budget: CacheBudget = rt.storages.cache_budget
    return budget


async def _fill(stub: td.Stub, count: int, offset: int = 0) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> None:
        for start in range(offset, offset + count, 100):
            stop = min(offset + count, start + 100)
            await ctx.storage.put({f"k{i:03}": VALUE for i in range(start, stop)})

    await run_in_object(stub, body)


async def _reads_from_backend(backend: ControlledBackend, stub: td.Stub, key: str) -> int:
    before = backend.reads_started
    assert await stub.get(key) == VALUE, f"{key} reads back"
    return backend.reads_started - before


async def test_caches_of_many_objects_stay_within_the_budget(
    small: tuple[td.Runtime, ControlledBackend],
) -> None:
    rt, _ = small
    boxes = rt.namespace("boxes")
    for n in range(10):
        await _fill(boxes.get_by_name(f"o{n}"), 30)
    used = _budget(rt).used
    assert 0 < used <= BUDGET, f"300 entries written, {used:,} bytes cached of {BUDGET:,}"


async def test_one_object_alone_stays_within_the_budget(
    small: tuple[td.Runtime, ControlledBackend],
) -> None:
    rt, _ = small
    await _fill(rt.namespace("boxes").get_by_name("big"), 500)
    used = _budget(rt).used
    assert 0 < used <= BUDGET, f"500 entries written, {used:,} bytes cached of {BUDGET:,}"


async def test_least_recently_used_object_loses_its_cache_first(
    small: tuple[td.Runtime, ControlledBackend],
) -> None:
    rt, backend = small
    boxes = rt.namespace("boxes")
    busy, quiet, newcomer = (boxes.get_by_name(name) for name in ("busy", "quiet", "new"))
    await _fill(busy, 15)
    await _fill(quiet, 15)
    await _reads_from_backend(backend, busy, "k000")  # busy is now the most recent
    await _fill(newcomer, 15)  # 45 entries: over the budget of 40
    quiet_reads = await _reads_from_backend(backend, quiet, "k001")
    busy_reads = await _reads_from_backend(backend, busy, "k001")
    assert (quiet_reads, busy_reads) == (1, 0), (
        f"the quiet object's cache was emptied, the busy one's kept: "
        f"backend reads quiet={quiet_reads}, busy={busy_reads}"
    )


async def test_rewriting_a_key_does_not_grow_the_cache(
    small: tuple[td.Runtime, ControlledBackend],
) -> None:
    rt, _ = small

    async def body(obj: Any, ctx: td.ObjectContext) -> None:
        for _ in range(200):
            await ctx.storage.put("k000", VALUE)

    await run_in_object(rt.namespace("boxes").get_by_name("same"), body)
    assert _budget(rt).used == ENTRY, f"one key is one entry: {_budget(rt).used:,} bytes"
    assert _budget(rt).evictions == 0, "nothing had to be emptied"


async def test_a_key_costs_its_utf8_bytes(
    small: tuple[td.Runtime, ControlledBackend],
) -> None:
    rt, _ = small
    key = "\u00e9" * 500 + "\U0001f600" * 100  # 1,000 + 400 bytes of UTF-8, 600 characters

    async def body(obj: Any, ctx: td.ObjectContext) -> None:
        await ctx.storage.put(key, VALUE)

    await run_in_object(rt.namespace("boxes").get_by_name("accents"), body)
    expected = ENTRY_OVERHEAD + len(key.encode("utf-8")) + len(_codec.encode(VALUE))
    assert _budget(rt).used == expected, (
        f"the key counts 1,400 bytes, not 600 characters: {_budget(rt).used:,} bytes counted, "
        f"{expected:,} expected"
    )


async def test_evicted_object_gives_its_bytes_back(
    small: tuple[td.Runtime, ControlledBackend],
) -> None:
    rt, _ = small
    stub = rt.namespace("boxes").get_by_name("leaving")
    await _fill(stub, 10)
    await evict(stub)
    assert _budget(rt).used == 0, f"nothing stays counted: {_budget(rt).used:,} bytes"


async def test_emptied_cache_still_reads_every_value(
    small: tuple[td.Runtime, ControlledBackend],
) -> None:
    rt, _ = small
    stub = rt.namespace("boxes").get_by_name("reader")
    await _fill(stub, 100)

    async def body(obj: Any, ctx: td.ObjectContext) -> Any:
        return await ctx.storage.get([f"k{i:03}" for i in range(100)])

    got = await run_in_object(stub, body)
    assert len(got) == 100 and set(got.values()) == {VALUE}, "every value reads back"
    assert _budget(rt).evictions > 0, "the cache was emptied on the way"


@pytest.mark.parametrize(
    ("value", "error"), [(0, ValueError), (-1, ValueError), (1.5, TypeError), ("big", TypeError)]
)
async def test_cache_budget_option_is_checked(
    tmp_path: Path, value: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match="storage_cache_bytes"):
        async with td.open_runtime(OBJECTS, tmp_path, storage_cache_bytes=value):
            pass
