"""The runtime's wall clock: Trio's clock plus an offset recorded once.

The runtime reads time only through Trio's clock, so ``autojump_clock``
tests see exact times. Stored times (alarms, auto-response timestamps) are
epoch seconds, so one offset is recorded when the runtime starts:
``wall = trio.current_time() + offset``. The offset is rounded to 1/1024 s,
which keeps ``wall - offset`` exact for times a test is likely to use.
"""

from __future__ import annotations

import time

import trio

__all__ = ["WallClock", "system_time"]


def system_time() -> float:
    """The system's epoch seconds (read once per runtime; tests replace it)."""
    return time.time()


class WallClock:
    """Epoch seconds that follow Trio's clock (a ``MockClock`` in tests)."""

    __slots__ = ("offset",)

    def __init__(self) -> None:
        self.offset = 0.0

    def start(self) -> None:
        """Record the offset between the system clock and Trio's (inside the Trio run)."""
        self.offset = round((system_time() - trio.current_time()) * 1024) / 1024

    def now(self) -> float:
        """Now, in epoch seconds."""
        return trio.current_time() + self.offset

    def to_trio(self, epoch_seconds: float) -> float:
        """The Trio time at which the wall clock shows ``epoch_seconds``."""
        return epoch_seconds - self.offset
