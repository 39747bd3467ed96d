"""The cooperative yield budget shared by calls and storage operations."""

from __future__ import annotations

import contextvars
from typing import Final

import trio

__all__ = ["YIELD_BUDGET", "cooperative_yield"]

#: Calls a task may make before one of them must yield to the scheduler
#: (a cooperative budget, as in Tokio). Per task: each task has its own context.
YIELD_BUDGET: Final = 64

_budget: Final[contextvars.ContextVar[int]] = contextvars.ContextVar(
    "trio_durable_yield_budget", default=YIELD_BUDGET
)


async def cooperative_yield() -> None:
    """Yield to the scheduler if this task used up its budget of operations.

    Calls and storage operations are cancellation points every time, and
    schedule points at least every :data:`YIELD_BUDGET` operations of a task:
    a full scheduler pass costs an epoll syscall, as much as the operation,
    so yielding on every one would halve the rate. Shielded, so work already
    done is never lost to a cancellation.
    """
    budget = _budget.get()
    if budget > 1:
        _budget.set(budget - 1)
    else:
        _budget.set(YIELD_BUDGET)
        await trio.lowlevel.cancel_shielded_checkpoint()
