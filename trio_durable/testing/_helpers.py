"""Async helpers that reach inside a runtime on behalf of a test."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from .._ids import DurableObjectId
from .._object import DurableObject, ObjectContext
from .._runtime import runtime_of
from .._stubs import Namespace, Stub

__all__ = ["as_stub", "evict", "list_object_ids", "run_in_object"]

T = TypeVar("T")
ObjectT = TypeVar("ObjectT")


def as_stub(stub: object) -> Stub:
    """``stub`` itself, checked: a stub from any namespace, typed or not.

    Raises:
        TypeError: it is not a stub.
    """
    if not isinstance(stub, Stub):
        raise TypeError(f"expected a stub (namespace.get_by_name(...)), got {stub!r}")
    return stub


async def run_in_object(
    stub: ObjectT, fn: Callable[[ObjectT, ObjectContext], Awaitable[T] | T]
) -> T:
    """Run ``fn(instance, ctx)`` inside the live object behind ``stub``; return its result.

    ``fn`` may be an async function (its coroutine is awaited) or a plain
    function; a plain function that returns an awaitable, such as
    ``lambda obj, ctx: ctx.storage.get("count")``, has it awaited too::

        hits = await run_in_object(stub, lambda counter, ctx: counter.hits)
        count = await run_in_object(stub, lambda counter, ctx: ctx.storage.get("count"))

    It is an event like any other: it activates the object if needed, waits
    its turn at the input gate, and its result waits for the output gate.
    Exceptions from ``fn`` propagate with their type.

    Raises:
        TypeError: ``fn`` is not callable (checked before the object is
            activated).
    """
    if not callable(fn):
        raise TypeError(
            f"run_in_object() needs a function fn(instance, ctx), sync or async; "
            f"got {type(fn).__name__} {fn!r}"
        )
    handle = as_stub(stub)
    namespace = handle.namespace
    record = runtime_of(namespace).registry.activate(handle.id, namespace.object_class)

    async def handler(instance: DurableObject) -> T:
        result = fn(cast(ObjectT, instance), instance.ctx)
        if inspect.isawaitable(result):
            return cast(T, await result)
        return result

    outcome: T = await record.run_event(handler)
    return outcome


async def evict(stub: object, close_websockets: bool = False) -> bool:
    """Evict the object behind ``stub`` now, as hibernation would.

    Waits for handlers in flight to finish first (new events meanwhile go to
    the next instance). With ``close_websockets=True`` its hibernatable
    WebSockets are closed too (code 1001, "going away"), as when a
    Durable Object is redeployed.

    Returns:
        True if an instance was live and got evicted, False if none was.
    """
    handle = as_stub(stub)
    runtime = runtime_of(handle.namespace)
    evicted = await runtime.registry.evict(handle.id)
    if close_websockets:
        await runtime.sockets.close_object_sockets(handle.id.namespace, handle.id.hex)
    return evicted


async def list_object_ids(namespace: Namespace[Any]) -> list[DurableObjectId]:
    """Every ID of ``namespace`` ever activated or holding data, ordered by ID."""
    return await runtime_of(namespace).list_object_ids(namespace.name)
