"""Holding an object's input gate for the length of one storage call."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

import trio

from .._core._budget import cooperative_yield

if TYPE_CHECKING:
    from .._core._live import LiveObject

__all__ = ["InputGateHold"]


class InputGateHold:
    """``async with InputGateHold(record):`` holds the object's input gate.

    No other event of the object starts inside the block. Entering is a
    cancellation point (Trio's convention for async calls); leaving is a
    schedule point on the cooperative budget, taken while the gate is still
    held, so it never lets another event of the object in.
    """

    __slots__ = ("_record", "_waited")

    def __init__(self, record: LiveObject) -> None:
        self._record = record
        self._waited = False

    async def __aenter__(self) -> None:
        record = self._record
        record.check_alive()
        await trio.lowlevel.checkpoint_if_cancelled()
        gate = record.input_gate
        if not gate.try_hold():
            await gate.acquire()
            self._waited = True  # acquire() already yielded: no second yield on exit
        try:
            record.check_alive()
        except BaseException:
            self._release()
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if not self._waited:
                await cooperative_yield()
        finally:
            self._release()

    def _release(self) -> None:
        try:
            self._record.input_gate.release()
        except RuntimeError:
            # A reset forced the gate open while we held it: nothing to release.
            if self._record.reset_reason is None:
                raise
