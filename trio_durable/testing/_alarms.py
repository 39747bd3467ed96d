"""``run_alarm``: run an object's pending alarm now, without waiting for its time."""

from __future__ import annotations

from .._ids import Stub
from .._runtime import Runtime

__all__ = ["run_alarm"]


async def run_alarm(stub: Stub) -> bool:
    """Run the pending alarm of the object behind ``stub`` now.

    The handler runs as a normal alarm event (retry rules included) and the
    call returns once its writes are committed.

    Returns:
        True if the object had an alarm and its handler ran; False if it
        had none.
    """
    namespace = stub.namespace
    runtime: Runtime = namespace._registry.runtime
    return await runtime.alarms.deliver(namespace, stub.id, manual=True)
