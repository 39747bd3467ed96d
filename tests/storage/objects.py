"""Durable object classes and test backends shared by the storage tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import trio

import trio_durable as td
from trio_durable._storage._backend import Fence, KeyRange, ObjectWrite
from trio_durable._storage._sqlite import SqliteBackend


@attrs.define
class Member:
    name: str
    score: int = 0


@attrs.define(eq=False)
class Box(td.DurableObject):
    """Key-value calls over RPC, plus an alarm handler driven by stored settings."""

    alarm_calls: list[tuple[float, td.AlarmInfo]] = attrs.field(factory=list)

    async def put(self, key: str, value: Any) -> str:
        await self.ctx.storage.put(key, value)
        return "ok"

    async def get(self, key: str) -> Any:
        return await self.ctx.storage.get(key)

    async def put_then_fail(self, key: str, value: Any) -> None:
        await self.ctx.storage.put(key, value)
        raise KeyError("after the write")

    async def object_name(self) -> str | None:
        return self.ctx.id.name

    async def alarm(self, info: td.AlarmInfo) -> None:
        self.alarm_calls.append((trio.current_time(), info))
        log = await self.ctx.storage.get("alarm_log") or []
        log.append([trio.current_time(), info.retry_count, info.is_retry, self.ctx.id.name])
        await self.ctx.storage.put("alarm_log", log)
        mode = await self.ctx.storage.get("alarm_mode")
        if mode == "fail":
            raise RuntimeError("alarm handler failed on purpose")
        if mode == "again":
            await self.ctx.storage.put("alarm_mode", "done")
            await self.ctx.storage.set_alarm(td_wall(self) + 5)
        if mode == "sleep":
            await trio.sleep(30)
        if mode == "peek":
            await self.ctx.storage.put("alarm_seen", await self.ctx.storage.get_alarm())
        if mode == "delete":
            await self.ctx.storage.delete_alarm()
            await trio.sleep(1)
            await self.ctx.storage.put("alarm_finished", True)


def td_wall(obj: td.DurableObject) -> float:
    return obj.ctx.now()


@attrs.define(eq=False)
class NoAlarm(td.DurableObject):
    async def noop(self) -> None:
        pass


OBJECTS: dict[str, type[td.DurableObject]] = {"boxes": Box, "plain": NoAlarm}


class RecordingBackend(SqliteBackend):
    """Records every committed batch (to see what was committed together)."""

    def __init__(self, data_dir: Any) -> None:
        super().__init__(data_dir)
        self.batches: list[list[dict[str, bytes | None]]] = []

    async def commit(
        self, writes: Sequence[ObjectWrite], fence: Fence | None = None
    ) -> frozenset[int]:
        self.batches.append([dict(w.puts) for w in writes])
        return await super().commit(writes, fence)


class ControlledBackend(SqliteBackend):
    """A backend whose commits (and reads) can be held back or made to fail."""

    def __init__(self, data_dir: Any) -> None:
        super().__init__(data_dir)
        self.fail_commits = False
        self.commit_gate: trio.Event | None = None
        self.read_gate: trio.Event | None = None
        self.commits_started = 0
        self.reads_started = 0

    async def commit(
        self, writes: Sequence[ObjectWrite], fence: Fence | None = None
    ) -> frozenset[int]:
        self.commits_started += 1
        if self.commit_gate is not None:
            await self.commit_gate.wait()
        if self.fail_commits:
            raise OSError("disk on fire (on purpose)")
        return await super().commit(writes, fence)

    async def read(self, namespace: str, hex_id: str, keys: Sequence[str]) -> Mapping[str, bytes]:
        self.reads_started += 1
        if self.read_gate is not None:
            await self.read_gate.wait()
        return await super().read(namespace, hex_id, keys)

    async def read_range(
        self, namespace: str, hex_id: str, key_range: KeyRange
    ) -> list[tuple[str, bytes]]:
        return await super().read_range(namespace, hex_id, key_range)
