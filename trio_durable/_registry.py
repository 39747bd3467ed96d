"""The registry of live objects: activation, events, eviction and supervision.

One :class:`LiveObject` is one activation of one ID. Its life::

    (first event) ──► LIVE ──(idle hibernate_after / pinned evict_after)──► CLOSING ──► CLOSED
                        │                                                     ▲
                        └──────────(reset: abort, failed commit, bcw or ──────┘
                                    wait_until failure)

* Activation builds the instance synchronously in the caller's task (the
  constructor is plain Python), then starts the object's *lifetime task* in
  the registry's nursery. That task owns the object's cancel scope and
  nursery (``wait_until`` work runs there) and its eviction timer.
* If a previous activation of the same ID is still closing, the new one is
  created at once but its input gate stays shut until the old one is gone:
  one live instance per ID, ever, and events keep their arrival order.
* Handlers run in the calling task (a task per call would cost more than
  the call), inside a cancel scope that the object owns: a reset cancels
  them and their callers get :class:`ObjectResetError`. Cancelling a call
  cancels its handler, as with any Trio function; work that must outlive the
  caller belongs in ``ctx.wait_until``.
* Time is read only from Trio's clock, so ``autojump_clock`` tests see
  exact eviction times.
"""

from __future__ import annotations

import contextvars
import enum
import heapq
import itertools
import logging
import math
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._exceptions import ObjectResetError
from ._gates import InputGate, OutputGate
from ._ids import DurableObjectId, Invocation, Namespace
from ._object import DurableObject, ObjectContext

if TYPE_CHECKING:
    from ._runtime import Runtime

__all__ = ["LiveObject", "Registry", "current_object"]

logger = logging.getLogger("trio_durable")

#: The object whose handler the current task is running (``None`` outside objects).
_current_object: contextvars.ContextVar[LiveObject | None] = contextvars.ContextVar(
    "trio_durable_current_object", default=None
)


#: Calls a task may make before one of them must yield to the scheduler
#: (a cooperative budget, as in Tokio). Per task: each task has its own context.
_YIELD_BUDGET = 64
_yield_budget: contextvars.ContextVar[int] = contextvars.ContextVar(
    "trio_durable_yield_budget", default=_YIELD_BUDGET
)


async def cooperative_yield() -> None:
    """Yield to the scheduler if this task used up its budget of calls.

    Calls and storage operations are cancellation points every time, and
    schedule points at least every ``_YIELD_BUDGET`` operations of a task:
    a full scheduler pass costs an epoll syscall, as much as the operation.
    Shielded, so work already done is never lost to a cancellation.
    """
    budget = _yield_budget.get()
    if budget > 1:
        _yield_budget.set(budget - 1)
    else:
        _yield_budget.set(_YIELD_BUDGET)
        await trio.lowlevel.cancel_shielded_checkpoint()


def current_object() -> LiveObject | None:
    """The live object whose code the current task is running, if any."""
    return _current_object.get()


class State(enum.Enum):
    """Where a :class:`LiveObject` is in its life."""

    ACTIVATING = "activating"  # waiting for a predecessor to close
    LIVE = "live"
    CLOSING = "closing"  # evicting or resetting: no new events
    CLOSED = "closed"


ResetListener = Callable[["LiveObject", bool], None]
BackgroundWork = tuple[Callable[..., Awaitable[Any]], tuple[Any, ...]]


@attrs.define(eq=False, slots=True)
class Counters:
    """Mutable counters behind :meth:`Runtime.statistics`."""

    activations: int = 0
    evictions: int = 0
    resets: int = 0
    events_dispatched: int = 0


class LiveObject:
    """One activation of one object ID (internal)."""

    __slots__ = (
        "_cancel_requested",
        "_closed_event",
        "_evict_requested",
        "_sleeper",
        "busy",
        "ctx",
        "handler_scopes",
        "idle_since",
        "input_gate",
        "instance",
        "key",
        "last_event",
        "namespace",
        "nursery",
        "object_id",
        "output_gate",
        "pending_background",
        "pins",
        "predecessor",
        "registry",
        "reset_reason",
        "scheduled_at",
        "services",
        "socket_pins",
        "state",
    )

    def __init__(
        self,
        registry: Registry,
        namespace: Namespace,
        object_id: DurableObjectId,
        predecessor: LiveObject | None,
    ) -> None:
        self.registry = registry
        self.namespace = namespace
        self.object_id = object_id
        self.key = (namespace.name, object_id.hex)
        self.predecessor = predecessor
        self.state = State.ACTIVATING if predecessor is not None else State.LIVE
        self.instance: DurableObject | None = None
        self.ctx = ObjectContext(self, registry.runtime, object_id)
        self.input_gate = InputGate()
        self.output_gate = OutputGate()
        # Set when the object is cancelled before its nursery exists.
        self._cancel_requested = False
        self.nursery: trio.Nursery | None = None
        # Background work requested before the nursery exists (rare: lazily a list).
        self.pending_background: list[BackgroundWork] | None = None
        self.handler_scopes: set[trio.CancelScope] = set()
        self.busy = 0  # events admitted and not finished
        self.pins = 0  # background work: keeps the object awake up to evict_after
        self.socket_pins = 0  # open standard/outbound sockets: no eviction at all
        now = trio.current_time()
        self.idle_since = now
        self.last_event = now
        # Created only when someone waits for this activation to close.
        self._closed_event: trio.Event | None = None
        self.reset_reason: BaseException | None = None
        # The deadline of this object's entry in the registry's timer heap.
        self.scheduled_at = math.inf
        # The lifetime task, parked until its eviction is due (no Event: cheaper).
        self._sleeper: trio.lowlevel.Task | None = None
        self._evict_requested = False
        # Per-activation state of other layers (storage, sockets), by name.
        self.services: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"<LiveObject {self.namespace.name}:{self.object_id.hex[:12]}… {self.state.value}>"

    # ----------------------------------------------------------------- checks

    def check_alive(self) -> None:
        """Raise :class:`ObjectResetError` if this activation is gone."""
        if self.state in (State.CLOSING, State.CLOSED) and self.reset_reason is not None:
            raise ObjectResetError("the object was reset") from self.reset_reason

    # ------------------------------------------------------------- idle timer

    def eviction_deadline(self) -> float:
        """When the object should be evicted if nothing changes (``inf``: never)."""
        if self.busy:
            return math.inf
        if self._evict_requested:
            return -math.inf
        if self.socket_pins:
            return math.inf
        if self.pins:
            return self.last_event + self.registry.evict_after
        return self.idle_since + self.registry.hibernate_after

    def _reschedule(self) -> None:
        self.registry.schedule(self, self.eviction_deadline())

    def timer_fired(self, now: float) -> None:
        """(Registry timer) our heap entry came due: evict, or re-arm."""
        deadline = self.eviction_deadline()
        if deadline <= now:
            self._wake_lifetime()
        else:
            self.registry.schedule(self, deadline)

    def begin_event(self) -> None:
        """Count an event in (it keeps the object from being evicted)."""
        self.busy += 1

    def end_event(self) -> None:
        """Count an event out; the idle clock starts when none is left."""
        self.busy -= 1
        if self.busy == 0:
            now = self.last_event = trio.current_time()
            if self.pins == 0 and self.socket_pins == 0:
                self.idle_since = now
            self._reschedule()

    def pin(self, *, socket: bool = False) -> None:
        """Keep the object awake.

        Background work (``socket=False``) keeps it up to ``evict_after``
        seconds after its last event; an open standard or outbound socket
        (``socket=True``) keeps it until the socket closes.
        """
        if socket:
            self.socket_pins += 1
        else:
            self.pins += 1

    def unpin(self, *, socket: bool = False) -> None:
        """Undo :meth:`pin`; the idle clock starts when nothing is left."""
        if socket:
            self.socket_pins -= 1
        else:
            self.pins -= 1
        if self.pins == 0 and self.socket_pins == 0 and self.busy == 0:
            self.idle_since = trio.current_time()
        self._reschedule()

    def request_eviction(self) -> None:
        """Evict as soon as no handler is running (used by ``testing.evict``)."""
        if self.state is State.LIVE:
            self._evict_requested = True
            self.state = State.CLOSING
            self._reschedule()
        elif self.state is State.ACTIVATING:
            # Evicted as soon as it is built and idle.
            self._evict_requested = True

    # ------------------------------------------------------------- background

    def spawn_background(
        self, async_fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]
    ) -> None:
        """Run ``async_fn(*args)`` in the object's nursery, pinning the object."""
        self.pin()
        if self.nursery is None:
            if self.pending_background is None:
                self.pending_background = []
            self.pending_background.append((async_fn, args))
        else:
            self.nursery.start_soon(self._run_background, async_fn, args)

    async def _run_background(
        self, async_fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]
    ) -> None:
        _current_object.set(self)
        try:
            await async_fn(*args)
        except Exception as exc:
            name = getattr(async_fn, "__qualname__", repr(async_fn))
            logger.warning(
                "background work %s of %s failed; resetting the object",
                name,
                self.object_id,
                exc_info=exc,
            )
            self.reset(exc, origin=f"wait_until({name})")
        finally:
            self.unpin()

    # ------------------------------------------------------------------ reset

    def reset(self, reason: BaseException, *, origin: str, abort: bool = False) -> None:
        """Drop this activation at once: cancel handlers, background work and the timer.

        Callers waiting on the object get :class:`ObjectResetError`. The next
        event builds a fresh instance (after this one has fully closed).
        """
        if self.state is State.CLOSED or self.reset_reason is not None:
            return
        logger.info("resetting %s (%s): %r", self.object_id, origin, reason)
        self.reset_reason = reason
        self.state = State.CLOSING
        self.registry.counters.resets += 1
        self._cancel_everything()
        for listener in self.registry.reset_listeners:
            listener(self, abort)

    def shut_down(self) -> None:
        """Cancel this activation because the runtime is closing (not counted as a reset)."""
        if self.state is State.CLOSED:
            return
        if self.reset_reason is None:
            self.reset_reason = trio.ClosedResourceError("the runtime closed")
        self.state = State.CLOSING
        self._cancel_everything()

    def _cancel_everything(self) -> None:
        for scope in list(self.handler_scopes):
            scope.cancel()
        if self.nursery is not None:
            self.nursery.cancel_scope.cancel()
        else:
            self._cancel_requested = True
        self.input_gate.force_open()

    # -------------------------------------------------------------- lifetime

    async def lifetime(self) -> None:
        """The object's own task: its nursery, its cancel scope, its eviction timer."""
        registry = self.registry
        try:
            # The nursery's cancel scope is the object's cancel scope.
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                if self._cancel_requested:
                    return
                if self.predecessor is not None:
                    await self.predecessor.wait_closed()
                    self.predecessor = None
                    if not self._construct_after_wait():
                        return
                for async_fn, args in self.pending_background or ():
                    nursery.start_soon(self._run_background, async_fn, args)
                self.pending_background = None
                await self._wait_for_eviction()
                if self.reset_reason is None:
                    registry.counters.evictions += 1
                self.state = State.CLOSING
                nursery.cancel_scope.cancel()
        finally:
            self.state = State.CLOSED
            self.nursery = None
            self.instance = None
            registry.forget(self)
            for listener in registry.close_listeners:
                listener(self)
            if self._closed_event is not None:
                self._closed_event.set()

    def _construct_after_wait(self) -> bool:
        if self.state is State.CLOSING:  # reset or evicted before it ever started
            return False
        try:
            self.registry.construct(self)
        except Exception as exc:
            self.reset(exc, origin="constructor")
            return False
        self.state = State.LIVE
        self.input_gate.open_after_activation()
        return True

    async def _wait_for_eviction(self) -> None:
        # Returns only when eviction is due *now*. The timer wakes us, but an
        # event may have been admitted between that wake-up and this task
        # running (same scheduler batch): so check again after every wake-up.
        # The caller marks the object CLOSING right after, with no await in
        # between, so no event can slip in after the last check.
        while self.eviction_deadline() > trio.current_time():
            self._reschedule()
            self._sleeper = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort_sleep)

    def _abort_sleep(self, _: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        self._sleeper = None
        return trio.lowlevel.Abort.SUCCEEDED

    def _wake_lifetime(self) -> None:
        sleeper, self._sleeper = self._sleeper, None
        if sleeper is not None:
            trio.lowlevel.reschedule(sleeper)

    async def wait_closed(self) -> None:
        """Wait until this activation has fully closed."""
        if self.state is State.CLOSED:
            await trio.lowlevel.checkpoint()
            return
        if self._closed_event is None:
            self._closed_event = trio.Event()
        await self._closed_event.wait()

    # ----------------------------------------------------------------- events

    async def run_event(self, handler: Callable[[DurableObject], Awaitable[Any]]) -> Any:
        """Admit one event through the gates and run ``handler(instance)``.

        The event counts as busy from arrival, so the object is not evicted
        while it waits its turn. The reply waits for the output gate.
        """
        self.begin_event()
        scope = trio.CancelScope()
        self.handler_scopes.add(scope)
        token = _current_object.set(self)
        try:
            with scope:
                await self.input_gate.pass_through()
                instance = self.instance
                if instance is None:
                    raise ObjectResetError("the object was reset before the event started")
                self.registry.counters.events_dispatched += 1
                result = await handler(instance)
                await self.output_gate.wait()
            if not scope.cancel_called:
                return result
            # The object was reset while this event was in flight (whether or
            # not a checkpoint noticed): the reply is dropped.
            if isinstance(self.reset_reason, trio.ClosedResourceError):
                raise trio.ClosedResourceError("the runtime closed during the call")
            raise ObjectResetError(
                "the object was reset while this call was in flight"
            ) from self.reset_reason
        finally:
            _current_object.reset(token)
            self.handler_scopes.discard(scope)
            self.end_event()


class Registry:
    """All live objects of one runtime, by (namespace, id)."""

    def __init__(self, runtime: Runtime, *, hibernate_after: float, evict_after: float) -> None:
        self.runtime = runtime
        self.hibernate_after = hibernate_after
        self.evict_after = evict_after
        self.counters = Counters()
        self.reset_listeners: list[ResetListener] = []
        # Called when an activation has ended (evicted, reset or shut down).
        self.close_listeners: list[Callable[[LiveObject], None]] = []
        # Closes the hibernatable sockets of one object (namespace, hex id);
        # filled in by the WebSocket layer, used by testing.evict().
        self.socket_closers: list[Callable[[str, str], Awaitable[None]]] = []
        self._live: dict[tuple[str, str], LiveObject] = {}
        self._nursery: trio.Nursery | None = None
        self._closed = False
        # Eviction timers of all objects: (deadline, tie-breaker, object).
        self._timers: list[tuple[float, int, LiveObject]] = []
        self._timer_counter = itertools.count()
        self._timer_scope: trio.CancelScope | None = None
        # IDs activated since the backend last recorded them (written in batches).
        self.unrecorded: dict[tuple[str, str], DurableObjectId] = {}
        self.unrecorded_added = trio.Event()

    def attach(self, nursery: trio.Nursery) -> None:
        """Start hosting lifetimes in ``nursery`` (the runtime's)."""
        self._nursery = nursery

    def schedule(self, record: LiveObject, deadline: float) -> None:
        """Make sure ``record``'s timer fires no later than ``deadline``.

        Entries only ever move *earlier*: one that fires too early is
        re-armed by :meth:`LiveObject.timer_fired`. So a busy object costs at
        most one heap push per idle period, not one per event.
        """
        if deadline < record.scheduled_at:
            record.scheduled_at = deadline
            heapq.heappush(self._timers, (deadline, next(self._timer_counter), record))
            scope = self._timer_scope
            if scope is not None and deadline < scope.deadline:
                scope.deadline = deadline

    async def run_timers(self) -> None:
        """The one task that fires every object's eviction timer."""
        timers = self._timers
        while True:
            now = trio.current_time()
            while timers and timers[0][0] <= now:
                deadline, _, record = heapq.heappop(timers)
                if deadline != record.scheduled_at or record.state is State.CLOSED:
                    continue  # superseded by an earlier entry, or gone
                record.scheduled_at = math.inf
                record.timer_fired(now)
            with trio.CancelScope(deadline=timers[0][0] if timers else math.inf) as scope:
                self._timer_scope = scope
                await trio.sleep_forever()
            self._timer_scope = None

    def close(self) -> None:
        """Refuse new events from now on."""
        self._closed = True

    def shutdown(self) -> None:
        """Cancel every live object; callers in flight get ``trio.ClosedResourceError``."""
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

    def forget(self, record: LiveObject) -> None:
        """Drop ``record`` from the table if it is still the current activation."""
        if self._live.get(record.key) is record:
            del self._live[record.key]

    def construct(self, record: LiveObject) -> None:
        """Build the user's instance for ``record`` (runs the constructor)."""
        token = _current_object.set(record)
        try:
            record.instance = record.namespace.object_class(ctx=record.ctx, env=self.runtime.env)
        finally:
            _current_object.reset(token)

    def activate(self, namespace: Namespace, object_id: DurableObjectId) -> LiveObject:
        """The live activation for an ID, building one if needed.

        Raises:
            trio.ClosedResourceError: the runtime is closed.
            Exception: the constructor's error, with its type (nothing stays
                registered, so the next call tries again).
        """
        if self._closed or self._nursery is None:
            raise trio.ClosedResourceError("the runtime is closed")
        key = (namespace.name, object_id.hex)
        current = self._live.get(key)
        if current is not None and current.state in (State.LIVE, State.ACTIVATING):
            return current
        record = LiveObject(self, namespace, object_id, predecessor=current)
        self.counters.activations += 1
        if current is None:
            try:
                self.construct(record)
            except Exception:
                self.counters.resets += 1
                raise
        else:
            record.input_gate.close_for_activation()
        self._live[key] = record
        if not self.unrecorded:
            self.unrecorded_added.set()
        self.unrecorded[key] = object_id
        self._nursery.start_soon(record.lifetime)
        return record

    async def invoke(
        self, namespace: Namespace, object_id: DurableObjectId, invocation: Invocation
    ) -> Any:
        """Dispatch one call to an object and return its result.

        When the caller is itself an object's handler, it re-enters its own
        input gate after the call, so a ``block_concurrency_while`` in the
        caller holds back the reply.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        caller = _current_object.get()
        record = self.activate(namespace, object_id)

        async def handler(instance: DurableObject) -> Any:
            method = getattr(instance, invocation.method)
            return await method(*invocation.args, **invocation.kwargs)

        try:
            result = await record.run_event(handler)
        finally:
            if caller is not None and caller is not record and caller.state is not State.CLOSED:
                await caller.input_gate.pass_through()
        # Every call is a cancellation point (above). It is also a schedule
        # point at least every _YIELD_BUDGET calls of a task, so a loop of
        # calls to handlers that never block cannot starve other tasks for
        # more than about a millisecond. Yielding on *every* call would cost
        # a full scheduler pass (an epoll syscall) and halve the call rate.
        # Shielded, so a result that exists is never lost to a cancellation.
        await cooperative_yield()
        return result

    async def evict(self, namespace: Namespace, object_id: DurableObjectId) -> bool:
        """Evict an object once its running handlers finish; False if it was not live."""
        record = self._live.get((namespace.name, object_id.hex))
        if record is None or record.state is State.CLOSED:
            return False
        if record.state is not State.CLOSING:
            record.request_eviction()
        await record.wait_closed()
        return True
