"""Waiting for a state that no Trio event announces (one helper for every test folder)."""

from __future__ import annotations

from collections.abc import Callable

import trio

#: How long a wait may take before it counts as a hang. Not a time window a
#: test asserts: only the bound of a wait that would otherwise never end.
PATIENCE = 10.0


async def eventually(predicate: Callable[[], bool], within: float = PATIENCE) -> None:
    """Poll ``predicate`` until it holds; fail after ``within`` seconds.

    For states reached by real-time deadlines (parking after ``park_after``)
    or by client threads and processes. Polls every 5 ms of the current
    clock (virtual under ``autojump_clock``, where it costs nothing).
    """
    with trio.move_on_after(within):
        while not predicate():
            await trio.sleep(0.005)
        return
    raise AssertionError(f"condition not met within {within} s")
