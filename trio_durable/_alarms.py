"""Alarms: one durable wake-up time per object, and the scheduler that fires them.

Stored alarm times are epoch seconds. The runtime reads time only through
Trio's clock plus one offset recorded at start (``wall = trio.current_time()
+ offset``, :meth:`AlarmScheduler.wall_time`), so ``autojump_clock`` tests
see alarms fire at exact times. The offset is rounded to 1/1024 s, which
keeps ``wall - offset`` exact for times a test is likely to use.

One scheduler task per runtime keeps a heap of due times, loaded from the
backend at start and fed by every successful commit; an alarm is known to
the scheduler only once it is durable. Each due alarm is delivered as an
event (the object is busy, so it is not evicted while the handler runs).
A handler that raises is retried after 2 s, doubling, each with up to 25%
jitter, at most 6 times; then the alarm is dropped.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._exceptions import ObjectResetError
from ._ids import DurableObjectId, Namespace
from ._storage._backend import AlarmRecord, ObjectWrite
from ._storage._kv import _Hold, storage_for

if TYPE_CHECKING:
    from ._object import DurableObject
    from ._registry import LiveObject
    from ._runtime import Runtime

__all__ = ["AlarmInfo", "AlarmScheduler"]

logger = logging.getLogger("trio_durable")

MAX_RETRIES = 6
FIRST_BACKOFF = 2.0
MAX_JITTER = 0.25

ObjectKey = tuple[str, str]


@attrs.frozen
class AlarmInfo:
    """What the ``alarm(info)`` handler is told.

    Attributes:
        scheduled_time: The time the alarm was set for (epoch seconds).
        retry_count: How many earlier attempts failed.
        is_retry: True when an earlier attempt failed.
    """

    scheduled_time: float
    retry_count: int = 0
    is_retry: bool = False


def wall_clock() -> float:
    """The system's epoch seconds, read once at start (tests replace it)."""
    return time.time()


def jitter() -> float:
    """The random part of a retry delay: a fraction in ``[0, 0.25]``."""
    return random.uniform(0.0, MAX_JITTER)


def retry_delay(retry: int) -> float:
    """Seconds before retry number ``retry`` (1 for the first): 2, 4, 8, ... plus jitter."""
    return FIRST_BACKOFF * 2.0 ** (retry - 1) * (1.0 + jitter())


@attrs.define(eq=False, slots=True)
class _Entry:
    time: float
    name: str | None


class AlarmScheduler:
    """Fires every object's alarm on time (one per runtime)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.offset = 0.0
        self._entries: dict[ObjectKey, _Entry] = {}
        self._heap: list[tuple[float, int, ObjectKey, float]] = []
        self._seq = itertools.count()
        self._changed = trio.Event()
        self._firing: set[ObjectKey] = set()
        self._refire: set[ObjectKey] = set()
        self._failures: dict[ObjectKey, int] = {}
        self.fired = 0

    # ------------------------------------------------------------------ time

    def start_clock(self) -> None:
        """Record the wall-clock offset (call once, inside the Trio run)."""
        self.offset = round((wall_clock() - trio.current_time()) * 1024) / 1024

    def wall_time(self) -> float:
        """Now, in epoch seconds, according to the runtime's clock."""
        return trio.current_time() + self.offset

    # ----------------------------------------------------------------- table

    async def load(self) -> None:
        """Load every stored alarm (those already due fire right after start)."""
        for stored in await self.runtime.backend.load_alarms():
            self._set((stored.namespace, stored.hex_id), stored.name, stored.alarm.time)

    def on_commit(self, writes: Sequence[ObjectWrite]) -> None:
        """Follow committed alarm changes (an engine commit listener)."""
        for write in writes:
            key = (write.namespace, write.hex_id)
            if isinstance(write.alarm, AlarmRecord):
                self._set(key, write.name, write.alarm.time)
            elif write.alarm is False or write.clear:
                self._entries.pop(key, None)
                self._failures.pop(key, None)

    def _set(self, key: ObjectKey, name: str | None, at: float) -> None:
        previous = self._entries.get(key)
        if name is None and previous is not None:
            name = previous.name
        self._entries[key] = _Entry(at, name)
        self._push(key, at)

    def _push(self, key: ObjectKey, at: float) -> None:
        heapq.heappush(self._heap, (at - self.offset, next(self._seq), key, at))
        self._changed.set()

    def _is_current(self, key: ObjectKey, at: float) -> bool:
        entry = self._entries.get(key)
        return entry is not None and entry.time == at

    # ------------------------------------------------------------------- run

    async def run(self) -> None:
        """The scheduler task: fire alarms as they come due, until cancelled."""
        async with trio.open_nursery() as nursery:
            heap = self._heap
            while True:
                while heap and not self._is_current(heap[0][2], heap[0][3]):
                    heapq.heappop(heap)
                if not heap:
                    await self._changed.wait()
                    self._changed = trio.Event()
                    continue
                deadline, _, key, at = heap[0]
                if deadline > trio.current_time():
                    with trio.move_on_at(deadline):
                        await self._changed.wait()
                    if self._changed.is_set():
                        self._changed = trio.Event()
                    continue
                heapq.heappop(heap)
                if key in self._firing:
                    self._refire.add(key)
                    continue
                entry = self._entries[key]
                self._firing.add(key)
                nursery.start_soon(self._fire, key, entry.name, at)

    async def _fire(self, key: ObjectKey, name: str | None, at: float) -> None:
        try:
            try:
                namespace = self.runtime.namespace(key[0])
            except KeyError:
                logger.warning("alarm for unknown namespace %r is kept but not run", key[0])
                return
            object_id = DurableObjectId(namespace.name, key[1], name)
            try:
                await self.deliver(namespace, object_id, manual=False)
            except trio.ClosedResourceError:
                return
            except Exception as exc:
                # The object could not run it (constructor failed, reset,
                # commit failed): the stored alarm is intact; try again later.
                failures = self._failures.get(key, 0) + 1
                self._failures[key] = failures
                if failures <= MAX_RETRIES and self._is_current(key, at):
                    logger.warning("alarm of %s could not run; retrying", object_id, exc_info=exc)
                    self._push(key, trio.current_time() + self.offset + retry_delay(failures))
                else:
                    logger.error("alarm of %s could not run; giving up", object_id, exc_info=exc)
        finally:
            self._firing.discard(key)
            if key in self._refire:
                self._refire.discard(key)
                entry = self._entries.get(key)
                if entry is not None:
                    self._push(key, entry.time)

    async def deliver(
        self, namespace: Namespace, object_id: DurableObjectId, *, manual: bool
    ) -> bool:
        """Run the object's alarm handler as an event; False if no alarm was due.

        With ``manual=True`` (``testing.run_alarm``) a pending alarm runs
        even if it is not due yet.
        """
        record = self.runtime.registry.activate(namespace, object_id)

        async def handler(instance: DurableObject) -> bool:
            return await self._run_handler(record, instance, manual=manual)

        result: bool = await record.run_event(handler)
        if result:
            self.fired += 1
            self._failures.pop(record.key, None)
        return result

    async def _run_handler(self, record: LiveObject, instance: Any, *, manual: bool) -> bool:
        storage = storage_for(record)
        async with _Hold(record):
            current = await storage._load_alarm()
        if current is None:
            return False
        if not manual and current.time - self.offset > trio.current_time():
            return False  # moved to later; its new heap entry will fire it
        handler = getattr(instance, "alarm", None)
        if handler is None:
            raise ObjectResetError(f"{type(instance).__name__} has no alarm() handler")
        storage._alarm = None  # get_alarm() is None inside the handler...
        storage._alarm_changed = False  # ...unless it sets a new one
        info = AlarmInfo(current.scheduled_time, current.retry_count, current.retry_count > 0)
        try:
            await handler(info)
        except Exception as exc:
            if not storage._alarm_changed:
                retry = current.retry_count + 1
                if retry > MAX_RETRIES:
                    logger.error(
                        "alarm of %s failed %d times; giving up",
                        record.object_id,
                        retry,
                        exc_info=exc,
                    )
                    storage._store_alarm(None)
                else:
                    logger.warning(
                        "alarm of %s failed; retry %d", record.object_id, retry, exc_info=exc
                    )
                    at = self.wall_time() + retry_delay(retry)
                    storage._store_alarm(AlarmRecord(at, current.scheduled_time, retry))
            return True
        if not storage._alarm_changed:
            storage._store_alarm(None)
        return True
