"""Make ``tests/values/data-0.1.0/``: a data dir written by trio_durable 0.1.0.

Kept for the record. It was run once, with the 0.1.0 code (values stored as
JSON by the cattrs converter), to produce the fixture that the values tests
read back after the storage format changed; running it again with a later
release would write the *new* format and defeat its purpose. What each key
holds is listed in ``data-0.1.0/README.md``.

Run from the repository root (the directory must not exist yet)::

    PYTHONPATH=$PWD python tests/values/make_v010_fixture.py tests/values/data-0.1.0
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
from pathlib import Path
from typing import Any

import attrs
import trio

import trio_durable as td

NAMESPACE = "fixtures"
OBJECT_NAME = "v0.1.0"
#: 2100-01-01T00:00:00Z: far enough that the alarm never fires in a test.
ALARM_AT = 4_102_444_800.0


@attrs.define
class Member:
    name: str
    score: int = 0


@attrs.define(eq=False)
class Keeper(td.DurableObject):
    """Writes one of each kind of value that 0.1.0 could store."""

    async def fill(self) -> None:
        storage = self.ctx.storage
        await storage.put("str", "héllo wörld")
        await storage.put("int", 42)
        await storage.put("float", 2.5)
        await storage.put("bool", True)
        await storage.put("list", [1, "two", 3.0, None, False])
        await storage.put("nested", {"a": {"b": [1, 2, {"c": "d"}]}, "e": None})
        await storage.put("member", Member(name="ada", score=7))
        await storage.set_alarm(ALARM_AT)
        storage.sql.exec("CREATE TABLE people (name TEXT, age INTEGER)")
        storage.sql.exec("INSERT INTO people VALUES (?, ?)", "ada", 36)

    async def alarm(self, info: td.AlarmInfo) -> None:
        pass  # never runs: the alarm is set for 2100


async def make(data_dir: Path) -> None:
    async with td.open_runtime(objects={NAMESPACE: Keeper}, data_dir=data_dir) as runtime:
        stub: Any = runtime.namespace(NAMESPACE).get_by_name(OBJECT_NAME)
        await stub.fill()


def main() -> None:
    data_dir = Path(sys.argv[1])
    if data_dir.exists():
        raise SystemExit(f"{data_dir} exists; this script only makes a fresh fixture")
    trio.run(make, data_dir)
    # A clean close checkpoints the WAL into the main files; check that no
    # WAL content is left behind, so the committed *.sqlite3 files hold all.
    leftovers = [p for p in data_dir.rglob("*-wal") if p.stat().st_size > 0]
    if leftovers:
        raise SystemExit(f"WAL content left after close: {leftovers}")
    for path in sorted(data_dir.rglob("*.sqlite3")):
        # A read-write connection (even one that only reads) removes the
        # -wal and -shm files when it closes; a read-only one would leave
        # them behind.
        with contextlib.closing(sqlite3.connect(path)) as db:
            tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master")]
        print(path.relative_to(data_dir), tables)


if __name__ == "__main__":
    main()
