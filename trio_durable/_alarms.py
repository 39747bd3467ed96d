"""Alarms: one durable wake-up time per object, and the scheduler that fires them.

Stored alarm times are epoch seconds, compared with the runtime's
:class:`~trio_durable._core._clock.WallClock` (Trio's clock plus an offset
recorded at start), so ``autojump_clock`` tests see alarms fire at exact
times.

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
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import attrs
import trio

from ._core._clock import WallClock
from ._core._live import LiveObject
from ._core._registry import Registry
from ._exceptions import ObjectResetError
from ._ids import DurableObjectId, shard_of
from ._storage._backend import AlarmRecord, Backend, ObjectWrite
from ._storage._gate import InputGateHold
from ._storage._service import StorageService

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
    """Fires every object's alarm on time (one per runtime).

    Args:
        backend: Where alarms are stored (loaded once at start).
        registry: Where alarms are delivered, as events.
        storages: The objects' storage (the alarm handler runs against it).
        clock: The runtime's wall clock.
        classes: Namespace name → object class, to activate an object.
        owns: In a cluster: whether this process holds an object's shard
            (by 64-hex ID); only those alarms are kept and fired here.
            ``None``: every alarm is this process's.
    """

    def __init__(
        self,
        *,
        backend: Backend,
        registry: Registry,
        storages: StorageService,
        clock: WallClock,
        classes: Mapping[str, type],
        owns: Callable[[str], bool] | None = None,
    ) -> None:
        self._backend = backend
        self._owns = owns
        self._registry = registry
        self._storages = storages
        self._clock = clock
        self._classes = classes
        self._entries: dict[ObjectKey, _Entry] = {}
        self._heap: list[tuple[float, int, ObjectKey, float]] = []
        self._seq = itertools.count()
        self._changed = trio.Event()
        self._firing: set[ObjectKey] = set()
        self._refire: set[ObjectKey] = set()
        self._failures: dict[ObjectKey, int] = {}
        self.fired = 0
        #: Alarms this scheduler started because they came due, and the sum of
        #: how late each started (seconds after its time, by the runtime's clock).
        self.started = 0
        self.lag_seconds = 0.0

    # ----------------------------------------------------------------- table

    async def load(self, shards: Collection[int] | None = None) -> None:
        """Load the stored alarms (of ``shards`` only, when given); those due fire at once."""
        for stored in await self._backend.load_alarms(shards):
            self._set((stored.namespace, stored.hex_id), stored.name, stored.alarm.time)

    def forget_shards(self, shards: Collection[int]) -> None:
        """Drop the alarms of shards another process now holds (it fires them)."""
        for key in [key for key in self._entries if shard_of(key[1]) in shards]:
            del self._entries[key]
            self._failures.pop(key, None)

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
        heapq.heappush(self._heap, (self._clock.to_trio(at), next(self._seq), key, at))
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
            if self._owns is not None and not self._owns(key[1]):
                self._entries.pop(key, None)  # its shard moved: the owner fires it
                return
            if key[0] not in self._classes:
                logger.warning("alarm for unknown namespace %r is kept but not run", key[0])
                return
            object_id = DurableObjectId(key[0], key[1], name)
            self.started += 1
            self.lag_seconds += max(0.0, self._clock.now() - at)
            try:
                await self.deliver(object_id, manual=False)
            except trio.ClosedResourceError:
                return
            except Exception as exc:
                # The object could not run it (constructor failed, reset,
                # commit failed): the stored alarm is intact; try again later.
                failures = self._failures.get(key, 0) + 1
                self._failures[key] = failures
                if failures <= MAX_RETRIES and self._is_current(key, at):
                    logger.warning("alarm of %s could not run; retrying", object_id, exc_info=exc)
                    self._push(key, self._clock.now() + retry_delay(failures))
                else:
                    logger.error("alarm of %s could not run; giving up", object_id, exc_info=exc)
        finally:
            self._firing.discard(key)
            if key in self._refire:
                self._refire.discard(key)
                entry = self._entries.get(key)
                if entry is not None:
                    self._push(key, entry.time)

    async def deliver(self, object_id: DurableObjectId, *, manual: bool) -> bool:
        """Run the object's alarm handler as an event; False if no alarm was due.

        With ``manual=True`` (``testing.run_alarm``) a pending alarm runs
        even if it is not due yet.
        """
        record = self._registry.activate(object_id, self._classes[object_id.namespace])

        async def handler(instance: Any) -> bool:
            return await self._run_handler(record, instance, manual=manual)

        result: bool = await record.run_event(handler)
        if result:
            self.fired += 1
            self._failures.pop(record.key, None)
        return result

    async def _run_handler(self, record: LiveObject, instance: Any, *, manual: bool) -> bool:
        alarm = self._storages.store_for(record).alarm
        async with InputGateHold(record):
            current = await alarm.current()
        if current is None:
            return False
        if not manual and self._clock.to_trio(current.time) > trio.current_time():
            return False  # moved to later; its new heap entry will fire it
        handler = getattr(instance, "alarm", None)
        if handler is None:
            raise ObjectResetError(f"{type(instance).__name__} has no alarm() handler")
        alarm.handler_started()
        info = AlarmInfo(current.scheduled_time, current.retry_count, current.retry_count > 0)
        try:
            await handler(info)
        except Exception as exc:
            if not alarm.changed_by_handler:
                retry = current.retry_count + 1
                if retry > MAX_RETRIES:
                    logger.error(
                        "alarm of %s failed %d times; giving up",
                        record.object_id,
                        retry,
                        exc_info=exc,
                    )
                    alarm.settle(None)
                else:
                    logger.warning(
                        "alarm of %s failed; retry %d", record.object_id, retry, exc_info=exc
                    )
                    at = self._clock.now() + retry_delay(retry)
                    alarm.settle(AlarmRecord(at, current.scheduled_time, retry))
            return True
        if not alarm.changed_by_handler:
            alarm.settle(None)
        return True
