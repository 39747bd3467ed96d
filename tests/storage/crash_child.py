"""A runtime in a child process, for the kill -9 tests.

``python crash_child.py DATA_DIR write`` opens a runtime, sets an alarm, then
makes transactional writes (key-value and SQL) from several objects,
printing ``ack OBJ I`` after each call returned (the write is acknowledged).
The parent kills it at a random moment. ``DATA_DIR`` may be a
``postgresql://`` URL instead: the runtime then keeps everything there.

``python crash_child.py DATA_DIR verify`` reopens the same data, waits for the
pending alarm to fire, and prints every object's keys as one JSON line.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import attrs
import trio

import trio_durable as td

WRITERS = 8
KEYS_PER_TXN = 4
ALARM_DELAY = 1.5


@attrs.define(eq=False)
class Writer(td.DurableObject):
    def __attrs_post_init__(self) -> None:
        self.ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS log (i INTEGER PRIMARY KEY)")

    async def write(self, i: int) -> int:
        async with self.ctx.storage.transaction() as txn:
            await txn.put({f"t{i:06}-{j}": i for j in range(KEYS_PER_TXN)})
            # OR REPLACE: with SQLite, a kill between the SQL part of a commit
            # and its key-value part keeps the row, and the next run writes it again.
            self.ctx.storage.sql.exec("INSERT OR REPLACE INTO log (i) VALUES (?)", i)
        await self.ctx.storage.put("last", i)
        return i

    async def arm(self, at: float) -> None:
        await self.ctx.storage.set_alarm(at)

    async def alarm(self, info: td.AlarmInfo) -> None:
        await self.ctx.storage.put("alarm_fired", info.scheduled_time)

    async def last(self) -> int:
        last: int | None = await self.ctx.storage.get("last")
        return -1 if last is None else last

    async def dump(self) -> dict[str, Any]:
        state = await self.ctx.storage.list()
        state["sql_log"] = [row["i"] for row in self.ctx.storage.sql.exec("SELECT i FROM log")]
        return state

    async def pending_alarm(self) -> float | None:
        return await self.ctx.storage.get_alarm()


def emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _open(data_dir: str) -> Any:
    if data_dir.startswith("postgresql://"):
        return td.open_runtime({"writers": Writer}, database=data_dir)
    return td.open_runtime({"writers": Writer}, data_dir)


async def write(data_dir: str) -> None:
    async with _open(data_dir) as runtime:
        writers = runtime.namespace("writers")
        alarm_at = runtime.wall_time() + ALARM_DELAY
        await writers.get_by_name("alarm").arm(alarm_at)
        emit(f"alarm {alarm_at!r}")

        async def loop(name: str) -> None:
            stub = writers.get_by_name(name)
            i = await stub.last() + 1  # continue after an earlier run
            while True:
                await stub.write(i)
                emit(f"ack {name} {i}")
                i += 1

        async with trio.open_nursery() as nursery:
            for n in range(WRITERS):
                nursery.start_soon(loop, f"w{n}")


async def verify(data_dir: str) -> None:
    async with _open(data_dir) as runtime:
        writers = runtime.namespace("writers")
        alarm = writers.get_by_name("alarm")
        with trio.move_on_after(10):
            while "alarm_fired" not in await alarm.dump():
                await trio.sleep(0.05)
        state = {f"w{n}": await writers.get_by_name(f"w{n}").dump() for n in range(WRITERS)}
        state["alarm"] = await alarm.dump()
        emit(json.dumps(state))


def main() -> None:
    data_dir, mode = sys.argv[1], sys.argv[2]
    trio.run(write if mode == "write" else verify, data_dir)


if __name__ == "__main__":
    main()
