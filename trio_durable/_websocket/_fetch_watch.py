"""Sockets accepted by a fetch, settled when the fetch returns.

A server end accepted during a fetch can only ever be connected if the
fetch's response carries its client end out (``Response.websocket(client)``).
A fetch that raises, or answers with anything else, leaves a socket no
connection will serve: it would sit in ``get_websockets()`` and swallow
broadcasts. So the server ends accepted while a fetch runs are collected
(per task, like the fetch itself, in a context variable) and settled when
it returns.

This module only collects; what settling a socket means is the handle's
business, passed in as ``settle_one``.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any, Final, TypeVar

from .._http import Response

__all__ = ["note_accepted", "watch_fetch"]

S = TypeVar("S")

_accepted_in_fetch: Final[contextvars.ContextVar[list[Any] | None]] = contextvars.ContextVar(
    "trio_durable_accepted_in_fetch", default=None
)


def note_accepted(end: object) -> None:
    """``end`` was accepted in this task: if a fetch runs here, it settles it on return."""
    accepted = _accepted_in_fetch.get()
    if accepted is not None:
        accepted.append(end)


def watch_fetch(
    settle_one: Callable[[S, Response | None], bool],
) -> Callable[[Response | None], None]:
    """Collect the ends accepted by the fetch about to run in this task.

    Args:
        settle_one: Called for each collected end with the fetch's response
            (``None`` if it raised); returns True when the end is kept (the
            response carries its client end), having dropped it otherwise.

    Returns:
        ``settle(response)``, to call in the same task when the fetch is
        over. Ends that are kept go to the enclosing fetch, if this one was
        called from a fetch, which settles them in turn.
    """
    accepted: list[S] = []
    token = _accepted_in_fetch.set(accepted)

    def settle(response: Response | None) -> None:
        _accepted_in_fetch.reset(token)
        if not accepted:
            return
        enclosing = _accepted_in_fetch.get()
        for end in accepted:
            if settle_one(end, response) and enclosing is not None:
                enclosing.append(end)

    return settle
