"""``run_alarm``: run an object's pending alarm now, without waiting for its time."""

from __future__ import annotations

from .._runtime import runtime_of
from ._helpers import as_stub

__all__ = ["run_alarm"]


async def run_alarm(stub: object) -> bool:
    """Run the pending alarm of the object behind ``stub`` now.

    The handler runs as a normal alarm event (retry rules included) and the
    call returns once its writes are committed.

    Returns:
        True if the object had an alarm and its handler ran; False if it
        had none.
    """
    handle = as_stub(stub)
    return await runtime_of(handle.namespace).alarms.deliver(handle.id, manual=True)
