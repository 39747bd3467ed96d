"""The data dir on disk: private files, the ID secret, damaged files, undecodable values."""

from __future__ import annotations

import os
import resource
import secrets
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import trio_durable as td
from trio_durable import _codec
from trio_durable._storage._sqlite import DATABASE_NAME
from trio_durable.testing import run_in_object

from .objects import OBJECTS


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def _store(data_dir: Path, **entries: Any) -> None:
    async with td.open_runtime(OBJECTS, data_dir) as rt:
        stub = rt.namespace("boxes").get_by_name("keeper")
        for key, value in entries.items():
            await stub.put(key, value)


def _edit(data_dir: Path, statement: str, *bindings: Any) -> None:
    """Change the shared database behind the runtime's back (it is closed)."""
    db = sqlite3.connect(data_dir / DATABASE_NAME, isolation_level=None)
    try:
        db.execute(statement, bindings)
    finally:
        db.close()


def _replace_secret(data_dir: Path) -> None:
    new_secret = secrets.token_bytes(32)
    _edit(data_dir, "UPDATE _td_meta SET value = ? WHERE key = 'id_secret'", new_secret)


# ------------------------------------------------------------ permissions


async def test_new_data_dir_is_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "new" / "data"
    await _store(data_dir, k=1)
    assert _mode(data_dir) == 0o700, f"data dir mode is {oct(_mode(data_dir))}"


async def test_database_files_are_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with td.open_runtime(OBJECTS, data_dir) as rt:
        await rt.namespace("boxes").get_by_name("keeper").put("k", 1)
        files = sorted(p for p in data_dir.iterdir() if p.is_file())
        modes = {p.name: oct(_mode(p)) for p in files}
    expected = {DATABASE_NAME: "0o600", f"{DATABASE_NAME}-shm": "0o600"}
    expected[f"{DATABASE_NAME}-wal"] = "0o600"
    expected["trio_durable.lock"] = "0o600"  # the data dir's one-owner lock
    assert modes == expected, f"only the owner may read the data (and its ID secret): {modes}"


async def test_existing_readable_database_file_is_made_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    await _store(data_dir, k=1)
    (data_dir / DATABASE_NAME).chmod(0o644)
    await _store(data_dir, k=2)
    mode = _mode(data_dir / DATABASE_NAME)
    assert mode == 0o600, f"a file left readable by an older version is tightened: {oct(mode)}"


async def test_sql_databases_are_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with td.open_runtime(OBJECTS, data_dir) as rt:

        async def body(obj: Any, ctx: td.ObjectContext) -> None:
            ctx.storage.sql.exec("CREATE TABLE t (x)")

        await run_in_object(rt.namespace("boxes").get_by_name("keeper"), body)
    (file,) = (data_dir / "sql" / "boxes").glob("*.sqlite3")
    modes = [oct(_mode(p)) for p in (data_dir / "sql", data_dir / "sql" / "boxes", file)]
    assert modes == ["0o700", "0o700", "0o600"], f"sql dirs and file are private: {modes}"


# ------------------------------------------------------------ the ID secret


async def test_replaced_secret_is_refused_at_start(tmp_path: Path) -> None:
    await _store(tmp_path, k=1)
    _replace_secret(tmp_path)
    with pytest.raises(td.StorageError, match="not the one its objects were created with") as info:
        await _store(tmp_path, k=2)
    assert DATABASE_NAME in str(info.value), f"the error names the file: {info.value}"


async def test_replaced_secret_is_refused_with_only_unique_objects(tmp_path: Path) -> None:
    async with td.open_runtime(OBJECTS, tmp_path) as rt:
        boxes = rt.namespace("boxes")
        await boxes.get(boxes.new_unique_id()).put("k", 1)
    _replace_secret(tmp_path)
    with pytest.raises(td.StorageError, match="unique object"):
        await _store(tmp_path, k=2)


async def test_missing_secret_is_refused_when_objects_exist(tmp_path: Path) -> None:
    await _store(tmp_path, k=1)
    _edit(tmp_path, "DELETE FROM _td_meta WHERE key = 'id_secret'")
    with pytest.raises(td.StorageError, match="holds objects but no ID secret"):
        await _store(tmp_path, k=2)


async def test_refused_start_changes_nothing(tmp_path: Path) -> None:
    await _store(tmp_path, k=1)
    _edit(tmp_path, "DELETE FROM _td_meta WHERE key = 'id_secret'")
    with pytest.raises(td.StorageError):
        await _store(tmp_path, k=2)
    db = sqlite3.connect(tmp_path / DATABASE_NAME)
    try:
        secrets_left = db.execute("SELECT count(*) FROM _td_meta").fetchone()[0]
        values = db.execute("SELECT value FROM _td_kv").fetchall()
    finally:
        db.close()
    expected = (0, [(_codec.encode(1),)])
    assert (secrets_left, values) == expected, "no new secret was minted, no data lost"


async def test_missing_secret_is_created_when_no_object_exists(tmp_path: Path) -> None:
    await _store(tmp_path)
    _edit(tmp_path, "DELETE FROM _td_meta WHERE key = 'id_secret'")
    await _store(tmp_path, k=1)  # no error: nothing could be orphaned


# --------------------------------------------------------- damaged files


async def test_damaged_data_file_is_refused(tmp_path: Path) -> None:
    await _store(tmp_path, **{f"k{i}": "x" * 500 for i in range(200)})
    path = tmp_path / DATABASE_NAME
    db = sqlite3.connect(path)
    try:
        (root,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name = '_td_kv'").fetchone()
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
    finally:
        db.close()
    with path.open("r+b") as f:  # the key-value table's root page, past its header
        f.seek((root - 1) * page_size + 12)
        f.write(b"\xa5" * (page_size - 12))
    with pytest.raises(td.StorageError, match="quick_check") as info:
        await _store(tmp_path, k=1)
    assert str(path) in str(info.value), f"the error names the file: {info.value}"


async def test_data_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    await _store(tmp_path, k=1)
    path = tmp_path / DATABASE_NAME
    path.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(td.StorageError, match="not a database") as info:
        await _store(tmp_path, k=1)
    assert str(path) in str(info.value), f"the error names the file: {info.value}"


# -------------------------------------------------------- undecodable values


#: Stored bytes no runtime wrote, each with what it is.
PLANTED = {
    "pickle": b"\x80\x04\x95\x0b\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system\x94\x93.",
    # Format 1, a datetime extension value (code 18) cut to one byte.
    "short-datetime": b"\x01\xd4\x12\x00",
    # Format 1, a Decimal extension value (code 22) that is not a number.
    "bad-decimal": b"\x01\xd5\x16zz",
    # Format 1, a timedelta extension value (code 21) of 2**31 - 1 days.
    "huge-timedelta": b"\x01\xc7\x0c\x15\x7f\xff\xff\xff" + bytes(8),
    # Format 1, MessagePack cut short.
    "truncated": b"\x01\x92\x01",
    # JSON (as 0.1.0 wrote) nested deeper than the interpreter's recursion limit.
    "deep-json": b"[" * 100_000,
    "unknown-format": b"\x07abc",
}


@pytest.fixture(params=list(PLANTED))
async def planted(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """A data dir whose object "keeper" has a good key and one planted by someone else."""
    await _store(tmp_path, good=1, bad=2)
    _edit(tmp_path, "UPDATE _td_kv SET value = ? WHERE key = 'bad'", PLANTED[request.param])
    return tmp_path


async def test_undecodable_value_is_a_storage_error_naming_the_key(planted: Path) -> None:
    async with td.open_runtime(OBJECTS, planted) as rt:
        stub = rt.namespace("boxes").get_by_name("keeper")
        with pytest.raises(td.StorageError, match="key 'bad' cannot be decoded"):
            await stub.get("bad")


async def test_list_over_an_undecodable_value_names_the_key(planted: Path) -> None:
    async with td.open_runtime(OBJECTS, planted) as rt:

        async def body(obj: Any, ctx: td.ObjectContext) -> Any:
            return await ctx.storage.list()

        with pytest.raises(td.StorageError, match="'bad'"):
            await run_in_object(rt.namespace("boxes").get_by_name("keeper"), body)


async def test_undecodable_value_leaves_the_object_working(planted: Path) -> None:
    async with td.open_runtime(OBJECTS, planted) as rt:
        stub = rt.namespace("boxes").get_by_name("keeper")
        with pytest.raises(td.StorageError):
            await stub.get("bad")
        await stub.put("bad", "replaced")
        got = (await stub.get("good"), await stub.get("bad"))
        resets = rt.statistics().resets
    assert got == (1, "replaced"), f"other keys read and the bad one can be overwritten: {got}"
    assert resets == 0, "a bad value is the caller's error, not a reason to reset the object"


# ------------------------------------------------------ file descriptor cap


@pytest.fixture
def descriptor_cap() -> Iterator[list[int]]:
    """Lower this process's descriptor limit for the test; return the fillers to close."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    open_now = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (open_now + 64, hard))
    fillers: list[int] = []
    try:
        yield fillers
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _use_every_descriptor(fillers: list[int]) -> None:
    while True:
        try:
            fillers.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            return


async def test_sql_database_at_the_descriptor_cap_is_a_clear_error(
    runtime: td.Runtime, descriptor_cap: list[int]
) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> str:
        _use_every_descriptor(descriptor_cap)
        try:
            with pytest.raises(td.StorageError) as info:
                ctx.storage.sql.exec("CREATE TABLE t (x)")
        finally:
            for fd in descriptor_cap:
                os.close(fd)
            descriptor_cap.clear()
        ctx.storage.sql.exec("CREATE TABLE t (x)")  # works once descriptors are free
        return str(info.value)

    message = await run_in_object(runtime.namespace("boxes").get_by_name("new"), body)
    assert "Too many open files" in message, f"the error names the cause: {message}"
    assert "SQL database of object boxes:" in message, f"and what could not open: {message}"
