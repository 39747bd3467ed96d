"""Eviction timers: one heap and one task for every live object of a registry."""

from __future__ import annotations

import heapq
import itertools
import math
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from ._live import LiveObject

__all__ = ["EvictionTimers"]


class EvictionTimers:
    """Fires each live object's eviction check at its deadline.

    A heap of ``(deadline, tie-breaker, object)``; an object's current entry
    is the one whose deadline equals its ``scheduled_at``. Entries only ever
    move *earlier*: one that fires too early is re-armed by
    :meth:`LiveObject.timer_fired`, so a busy object costs at most one heap
    push per idle period, not one per event.
    """

    __slots__ = ("_counter", "_heap", "_scope")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, LiveObject]] = []
        self._counter = itertools.count()
        self._scope: trio.CancelScope | None = None

    def schedule(self, record: LiveObject, deadline: float) -> None:
        """Make sure ``record``'s check runs no later than ``deadline``."""
        if deadline < record.scheduled_at:
            record.scheduled_at = deadline
            heapq.heappush(self._heap, (deadline, next(self._counter), record))
            scope = self._scope
            if scope is not None and deadline < scope.deadline:
                scope.deadline = deadline

    async def run(self) -> None:
        """Fire due entries until cancelled (the one timer task of a registry)."""
        heap = self._heap
        while True:
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                deadline, _, record = heapq.heappop(heap)
                if deadline != record.scheduled_at or record.is_closed:
                    continue  # superseded by an earlier entry, or gone
                record.scheduled_at = math.inf
                record.timer_fired(now)
            with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as scope:
                self._scope = scope
                await trio.sleep_forever()
            self._scope = None
