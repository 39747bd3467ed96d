"""A disk that fills up: clear errors, a reset of the writer, nothing acknowledged lost."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import trio_durable as td
from trio_durable.testing import run_in_object

from .objects import OBJECTS, FillingDisk

DISK_FULL = "database or disk is full"


@pytest.fixture
async def disk(tmp_path: Path) -> FillingDisk:
    return FillingDisk(tmp_path / "data")


@pytest.fixture
async def runtime(disk: FillingDisk) -> AsyncIterator[td.Runtime]:
    async with td.open_runtime(OBJECTS, backend=disk) as rt:
        yield rt


async def test_write_on_a_full_disk_fails_clearly_and_resets_the_writer(
    runtime: td.Runtime, disk: FillingDisk
) -> None:
    writer = runtime.namespace("fragile").get_by_name("writer")
    assert await writer.put("a", 1) == "ok"
    assert await writer.hit() == 1
    disk.full = True
    with pytest.raises(td.ObjectResetError) as info:
        await writer.put("b", 2)
    cause = info.value.__cause__
    assert isinstance(cause, td.CommitFailedError), repr(cause)
    assert DISK_FULL in str(cause), f"the error says why: {cause}"
    assert runtime.statistics().resets == 1
    disk.full = False
    assert await writer.hit() == 1, "the writer was reset: a fresh instance"
    assert (await writer.get("a"), await writer.get("b")) == (1, None), "a kept, b never acked"


async def test_sync_inside_the_object_raises_on_a_full_disk(
    runtime: td.Runtime, disk: FillingDisk
) -> None:
    writer = runtime.namespace("fragile").get_by_name("syncer")
    seen: list[BaseException] = []

    async def body(obj: Any, ctx: td.ObjectContext) -> None:
        await ctx.storage.put("k", "v")
        try:
            await ctx.storage.sync()
        except td.ObjectResetError as exc:
            seen.append(exc)
            raise

    disk.full = True
    with pytest.raises(td.ObjectResetError):
        await run_in_object(writer, body)
    assert len(seen) == 1, "sync() raised inside the object"
    assert isinstance(seen[0].__cause__, td.CommitFailedError), repr(seen[0].__cause__)
    assert DISK_FULL in str(seen[0].__cause__)


async def test_other_objects_keep_working_while_the_disk_is_full(
    runtime: td.Runtime, disk: FillingDisk
) -> None:
    ns = runtime.namespace("fragile")
    writer, reader = ns.get_by_name("writer"), ns.get_by_name("reader")
    await reader.put("mine", "stored before")
    assert await reader.hit() == 1
    disk.full = True
    with pytest.raises(td.ObjectResetError):
        await writer.put("k", 1)
    assert await reader.get("mine") == "stored before", "reads still work"
    assert await reader.hit() == 2, "the reader was not reset"
    disk.full = False
    assert await reader.put("after", 2) == "ok", "writes work again once there is room"
    assert await writer.put("k", 3) == "ok"
    assert runtime.statistics().resets == 1, "only the writer was reset"


async def test_nothing_acknowledged_is_lost_across_a_full_disk_and_a_restart(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    acknowledged: dict[str, int] = {}
    refused: list[str] = []
    disk = FillingDisk(data)
    async with td.open_runtime(OBJECTS, backend=disk) as runtime:
        stub = runtime.namespace("fragile").get_by_name("ledger")
        for i in range(12):
            disk.full = i % 3 == 1  # every third write meets a full disk
            key = f"entry-{i}"
            try:
                await stub.put(key, i)
            except td.ObjectResetError:
                refused.append(key)
            else:
                acknowledged[key] = i
        disk.full = False
    assert refused == ["entry-1", "entry-4", "entry-7", "entry-10"], refused
    async with td.open_runtime(OBJECTS, data) as runtime:
        stub = runtime.namespace("fragile").get_by_name("ledger")
        for key, value in acknowledged.items():
            assert await stub.get(key) == value, f"acknowledged {key} was lost"
        for key in refused:
            assert await stub.get(key) is None, f"refused {key} was stored anyway"
