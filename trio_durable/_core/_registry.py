"""The registry: every live object of one runtime, by ID, and their supervision.

The registry activates objects (building the instance with the *builder*
the runtime gives it), hosts their lifetime tasks in the runtime's nursery,
runs their eviction timers, and tells listeners when one is reset or closes.
It knows nothing about what an instance is made of: storage, sockets and
the object's context are attached by the builder and by the listeners.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import trio

from .._ids import DurableObjectId
from ._live import (
    CURRENT_OBJECT,
    LIFECYCLE_LOGGER,
    Counters,
    LiveObject,
    Preparation,
    State,
    describe,
)
from ._timers import EvictionTimers

__all__ = ["Builder", "Registry"]

#: Builds the user's instance of a fresh activation (runs the constructor).
Builder = Callable[[LiveObject], Any]
#: Told when an object is reset: ``(record, aborted)``.
ResetListener = Callable[[LiveObject, bool], None]
#: Told when an activation has ended (evicted, reset or shut down).
CloseListener = Callable[[LiveObject], None]
#: Told when an activation starts (first event of an ID since the last close).
ActivationListener = Callable[[LiveObject], None]
#: Says what must finish before an activation of an ID is built (``None``: nothing).
Preparer = Callable[[DurableObjectId], Preparation | None]


class Registry:
    """All live objects of one runtime, by ``(namespace, hex id)``.

    Args:
        build: Builds the instance of a new activation (runs the constructor).
        hibernate_after: Seconds an idle object stays live.
        evict_after: Seconds after its last event that background work alone
            keeps an object live.
    """

    def __init__(self, build: Builder, *, hibernate_after: float, evict_after: float) -> None:
        self._build = build
        self.hibernate_after = hibernate_after
        self.evict_after = evict_after
        self.counters = Counters()
        self.timers = EvictionTimers()
        self.reset_listeners: list[ResetListener] = []
        self.close_listeners: list[CloseListener] = []
        self.activation_listeners: list[ActivationListener] = []
        #: Called before each event's handler; raises to refuse the event.
        self.admit: Callable[[LiveObject], None] | None = None
        #: Asked when an activation is created; what it returns is awaited
        #: (with the object's events held at its input gate) before the
        #: constructor runs. A failure resets the activation.
        self.prepare: Preparer | None = None
        self._live: dict[tuple[str, str], LiveObject] = {}
        self._nursery: trio.Nursery | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once the registry refuses new events (the runtime is closing)."""
        return self._closed

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Host lifetimes and timers until cancelled; then shut every object down."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self.timers.run)
                task_status.started()
                try:
                    await trio.sleep_forever()
                finally:
                    # Before the lifetimes see the cancellation: callers in
                    # flight must learn that the runtime closed.
                    self.shutdown()
        finally:
            self._nursery = None

    def shutdown(self) -> None:
        """Refuse new events and cancel every live object.

        Callers in flight get ``trio.ClosedResourceError``.
        """
        self._closed = True
        for record in list(self._live.values()):
            record.shut_down()

    def __len__(self) -> int:
        return sum(1 for record in self._live.values() if record.state is not State.CLOSED)

    def __iter__(self) -> Iterator[LiveObject]:
        return iter(list(self._live.values()))

    def lookup(self, namespace: str, hex_id: str) -> LiveObject | None:
        """The current activation of an ID, if there is one."""
        return self._live.get((namespace, hex_id))

    def schedule(self, record: LiveObject, deadline: float) -> None:
        """Make sure ``record``'s eviction check runs no later than ``deadline``."""
        self.timers.schedule(record, deadline)

    def start_task(self, async_fn: Callable[[], Awaitable[None]]) -> None:
        """Run ``async_fn()`` in the registry's nursery (an object's host task).

        Raises:
            trio.ClosedResourceError: the runtime is closed.
        """
        if self._nursery is None:
            raise trio.ClosedResourceError("the runtime is closed")
        self._nursery.start_soon(async_fn)

    def object_reset(self, record: LiveObject, aborted: bool) -> None:
        """Tell the reset listeners (a :class:`Supervisor` method)."""
        for listener in self.reset_listeners:
            listener(record, aborted)

    def object_closed(self, record: LiveObject) -> None:
        """Forget ``record`` and tell the close listeners (a :class:`Supervisor` method)."""
        if self._live.get(record.key) is record:
            del self._live[record.key]
        for listener in self.close_listeners:
            listener(record)

    def construct(self, record: LiveObject) -> None:
        """Build the user's instance for ``record`` (runs the constructor)."""
        token = CURRENT_OBJECT.set(record)
        try:
            record.instance = self._build(record)
        finally:
            CURRENT_OBJECT.reset(token)

    def preparation(self, record: LiveObject) -> Preparation | None:
        """What must finish before ``record`` is built (a :class:`Supervisor` method)."""
        return self.prepare(record.object_id) if self.prepare is not None else None

    def activate(self, object_id: DurableObjectId, object_class: type) -> LiveObject:
        """The live activation for an ID, building one if needed.

        The instance is built at once, unless a previous activation is still
        closing or the activation needs a preparation: then a task builds it
        later and the object's events wait at its input gate.

        Raises:
            trio.ClosedResourceError: the runtime is closed.
            Exception: the constructor's error, with its type, when it ran at
                once (nothing stays registered, so the next call tries
                again); a later build that fails resets the activation.
        """
        if self._closed or self._nursery is None:
            raise trio.ClosedResourceError("the runtime is closed")
        key = (object_id.namespace, object_id.hex)
        current = self._live.get(key)
        if current is not None and current.state in (State.LIVE, State.ACTIVATING):
            return current
        preparation = None
        if current is None and self.prepare is not None:
            preparation = self.prepare(object_id)
        immediate = current is None and preparation is None
        record = LiveObject(self, object_id, object_class, current, deferred=not immediate)
        self.counters.activations += 1
        if immediate:
            try:
                self.construct(record)
            except Exception:
                self.counters.resets += 1
                raise
        else:
            record.input_gate.close_for_activation()
        self._live[key] = record
        if LIFECYCLE_LOGGER.isEnabledFor(logging.INFO):
            LIFECYCLE_LOGGER.info("activated %s", describe(object_id))
        for listener in self.activation_listeners:
            listener(record)
        if immediate:
            self.timers.schedule(record, record.eviction_deadline())
        else:
            self._nursery.start_soon(record.activate_later, preparation)
        return record

    async def evict(self, object_id: DurableObjectId) -> bool:
        """Evict an object once its running handlers finish; False if it was not live."""
        record = self._live.get((object_id.namespace, object_id.hex))
        if record is None or record.state is State.CLOSED:
            return False
        if record.state is not State.CLOSING:
            record.request_eviction()
        await record.wait_closed()
        return True
