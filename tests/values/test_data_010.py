"""A data dir written by 0.1.0 (JSON values) opens and reads through the public API.

``data-0.1.0/README.md`` lists what the fixture holds. Every test opens a
runtime on a *copy* of it (a runtime writes to its data dir), reads through
``ctx.storage`` as an application would, and some write new values next to
the old ones: one data dir then holds 0.1.0's JSON rows and format-1 rows.
"""

from __future__ import annotations

import contextlib
import datetime
import shutil
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest

import trio_durable as td
from trio_durable.testing import evict, run_in_object

from ._same import same

FIXTURE = Path(__file__).parent / "data-0.1.0"
NAMESPACE = "fixtures"
OBJECT_NAME = "v0.1.0"
OBJECT_ID = "2939e0ae7e0a15ff7fefb50ee8fc36db4e7fcbc362e6e3ff0555267a68f3acbe"
ALARM_AT = 4_102_444_800.0

#: Each key of the fixture and the value ``get(key)`` gives (its README's table).
EXPECTED: dict[str, Any] = {
    "str": "héllo wörld",
    "int": 42,
    "float": 2.5,
    "bool": True,
    "list": [1, "two", 3.0, None, False],
    "nested": {"a": {"b": [1, 2, {"c": "d"}]}, "e": None},
    "member": {"name": "ada", "score": 7},
}


@attrs.define
class Member:
    name: str
    score: int = 0


@attrs.define
class MemberV2:
    """``Member`` one deploy later: ``score`` removed, ``since`` added with a default."""

    name: str
    since: datetime.date = datetime.date(2024, 1, 1)


@attrs.define(eq=False)
class Keeper(td.DurableObject):
    async def alarm(self, info: td.AlarmInfo) -> None:
        pass  # never runs: the fixture's alarm is set for 2100


OBJECTS: dict[str, type[td.DurableObject]] = {NAMESPACE: Keeper}


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A copy of the fixture: the committed files stay as 0.1.0 left them."""
    copy = tmp_path / "data"
    shutil.copytree(FIXTURE, copy)
    return copy


@contextlib.asynccontextmanager
async def _keeper(data_dir: Path) -> AsyncIterator[td.Stub]:
    async with td.open_runtime(OBJECTS, data_dir) as rt:
        yield rt.namespace(NAMESPACE).get_by_name(OBJECT_NAME)


async def test_fixture_object_is_found_by_name(data_dir: Path) -> None:
    async with _keeper(data_dir) as stub:
        hex_id = stub.id.hex
    assert hex_id == OBJECT_ID, "the fixture's ID secret was kept, so the name maps to its ID"


async def test_every_key_reads_as_010_returned_it(data_dir: Path) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> dict[str, Any]:
        return {key: await ctx.storage.get(key) for key in EXPECTED}

    async with _keeper(data_dir) as stub:
        got = await run_in_object(stub, body)
    assert same(EXPECTED, got), f"got {got!r}"


async def test_list_reads_every_key(data_dir: Path) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> dict[str, Any]:
        return await ctx.storage.list()

    async with _keeper(data_dir) as stub:
        got = await run_in_object(stub, body)
    assert same(dict(sorted(EXPECTED.items())), got), f"got {got!r}"
    assert list(got) == sorted(EXPECTED), "in key order"


@pytest.mark.parametrize(
    ("key", "type_", "expected"),
    [
        ("member", Member, Member("ada", 7)),
        ("member", MemberV2, MemberV2("ada")),
        ("str", str, "héllo wörld"),
        ("int", int, 42),
        ("float", float, 2.5),
        ("bool", bool, True),
        ("list", list[int | str | float | None], [1, "two", 3.0, None, False]),
        ("nested", dict[str, Any], {"a": {"b": [1, 2, {"c": "d"}]}, "e": None}),
    ],
    ids=["member", "member-evolved", "str", "int", "float", "bool", "list", "nested"],
)
async def test_keys_read_with_type(data_dir: Path, key: str, type_: Any, expected: Any) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> Any:
        return await ctx.storage.get(key, type=type_)

    async with _keeper(data_dir) as stub:
        got = await run_in_object(stub, body)
    assert same(expected, got), f"get({key!r}, type={type_}) gave {got!r}"


async def test_alarm_reads_back(data_dir: Path) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> Any:
        return await ctx.storage.get_alarm()

    async with _keeper(data_dir) as stub:
        got = await run_in_object(stub, body)
    assert got == ALARM_AT, f"2100-01-01T00:00:00Z, got {got!r}"


async def test_sql_row_reads_back(data_dir: Path) -> None:
    def body(obj: Any, ctx: td.ObjectContext) -> Any:
        return list(ctx.storage.sql.exec("SELECT * FROM people"))

    async with _keeper(data_dir) as stub:
        got = await run_in_object(stub, body)
    assert got == [{"name": "ada", "age": 36}], f"got {got!r}"


async def test_old_and_new_values_live_side_by_side(data_dir: Path) -> None:
    new = {
        "new:bytes": b"\x00\xff",
        "new:set": {1, (2, "x")},
        "new:when": datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        "new:keys": {1: "one", None: "none"},
        "new:member": Member("bob", 3),
        "int": 43,  # a 0.1.0 row overwritten in the new format
    }

    async def write(obj: Any, ctx: td.ObjectContext) -> None:
        await ctx.storage.put(new)

    async def read(obj: Any, ctx: td.ObjectContext) -> tuple[dict[str, Any], Any, Any]:
        return (
            await ctx.storage.list(),
            await ctx.storage.get("new:member", type=Member),
            await ctx.storage.get("member", type=Member),
        )

    async with _keeper(data_dir) as stub:
        await run_in_object(stub, write)
        await evict(stub)
        before_restart = await run_in_object(stub, read)
    async with _keeper(data_dir) as stub:
        after_restart = await run_in_object(stub, read)
    expected = {**EXPECTED, **new, "new:member": {"name": "bob", "score": 3}}
    for label, (listed, new_member, old_member) in [
        ("after eviction", before_restart),
        ("after restart", after_restart),
    ]:
        assert same(dict(sorted(expected.items())), listed), f"{label}: listed {listed!r}"
        assert new_member == Member("bob", 3), f"{label}: new record with type= {new_member!r}"
        assert old_member == Member("ada", 7), f"{label}: 0.1.0 record with type= {old_member!r}"
    assert _formats(data_dir) == {
        **dict.fromkeys(set(EXPECTED) - {"int"}, "json"),
        **dict.fromkeys(new, "format 1"),
    }, "old rows stay as 0.1.0 wrote them; new and rewritten rows are format 1"


#: Rows as 0.1.0 wrote values JSON has no type for (its cattrs JSON preset:
#: bytes as base85 text, datetimes and dates as ISO 8601, tuples and sets as
#: arrays), with what ``get`` gives without and with ``type=``.
PLANTED_010: dict[str, tuple[bytes, Any, Any, Any]] = {
    "bytes": (b'"00C%e"', "00C%e", bytes, b"\x00\x01hi"),
    "when": (
        b'"2024-05-01T12:30:00+00:00"',
        "2024-05-01T12:30:00+00:00",
        datetime.datetime,
        datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.UTC),
    ),
    "naive": (
        b'"2024-05-01T12:30:00"',
        "2024-05-01T12:30:00",
        datetime.datetime,
        datetime.datetime(2024, 5, 1, 12, 30),
    ),
    "pair": (b'[1,"a"]', [1, "a"], tuple[int, str], (1, "a")),
    "seen": (b"[1,2]", [1, 2], set[int], {1, 2}),
}


async def test_010_rows_of_bytes_datetimes_and_tuples_read_with_and_without_type(
    data_dir: Path,
) -> None:
    with contextlib.closing(sqlite3.connect(data_dir / "trio_durable.sqlite3")) as db:
        namespace, hex_id = db.execute(
            "SELECT namespace, id FROM _td_kv WHERE key = 'int'"
        ).fetchone()
        for key, (stored, *_) in PLANTED_010.items():
            db.execute(
                "INSERT INTO _td_kv (namespace, id, key, value) VALUES (?, ?, ?, ?)",
                (namespace, hex_id, key, stored),
            )
        db.commit()

    async def body(obj: Any, ctx: td.ObjectContext) -> dict[str, tuple[Any, Any]]:
        return {
            key: (await ctx.storage.get(key), await ctx.storage.get(key, type=type_))
            for key, (_, _, type_, _) in PLANTED_010.items()
        }

    async with _keeper(data_dir) as stub:
        got = await run_in_object(stub, body)
    for key, (_, plain, type_, typed) in PLANTED_010.items():
        assert same(plain, got[key][0]), f"{key}: without type= as 0.1.0 returned it: {got[key]!r}"
        assert same(typed, got[key][1]), f"{key}: with type={type_}: {got[key]!r}"


def _formats(data_dir: Path) -> dict[str, str]:
    with contextlib.closing(sqlite3.connect(data_dir / "trio_durable.sqlite3")) as db:
        rows = db.execute("SELECT key, value FROM _td_kv").fetchall()
    return {key: "format 1" if value[0] == 0x01 else "json" for key, value in rows}
