"""One activation of one object ID: :class:`LiveObject`.

Its life::

    (first event) ──► LIVE ──(idle hibernate_after / pinned evict_after)──► CLOSING ──► CLOSED
                        │                                                     ▲
                        └──────────(reset: abort, failed commit, bcw or ──────┘
                                    wait_until failure)

* Activation builds the instance synchronously in the caller's task (the
  constructor is plain Python). An object that only answers events needs no
  task of its own: the registry's timer evicts it when it has been idle long
  enough. Its *host task* (in the registry's nursery) starts with its first
  background work (``wait_until``, a standard socket's reader): it owns the
  object's nursery, whose cancel scope is the object's, and the activation
  closes only once that nursery has ended, so no background work of an old
  instance outlives it.
* If a previous activation of the same ID is still closing, the new one is
  created at once but its input gate stays shut until the old one is gone
  (a short task waits for it): one live instance per ID, ever, and events
  keep their arrival order. The same task runs the activation's
  *preparation* when there is one (a storage backend bringing the object's
  SQL database to this process, so that the synchronous SQL API works in the
  constructor), and only then builds the instance.
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
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

import attrs
import trio

from .._exceptions import ObjectResetError
from .._ids import DurableObjectId
from ._gates import InputGate, OutputGate

__all__ = [
    "CURRENT_OBJECT",
    "LIFECYCLE_LOGGER",
    "BackgroundWork",
    "Counters",
    "LiveObject",
    "Preparation",
    "State",
    "Supervisor",
    "current_object",
    "describe",
]

logger: Final = logging.getLogger("trio_durable")
#: One INFO line per activation, eviction and reset. Call sites test
#: ``isEnabledFor`` first: with the level off, a line costs one check, no formatting.
LIFECYCLE_LOGGER: Final = logging.getLogger("trio_durable.lifecycle")
_INFO: Final = logging.INFO


def describe(object_id: DurableObjectId) -> str:
    """``rooms:lobby`` for a named object, ``rooms:3f2a9c41d2e8b7a0…`` for a unique one.

    The named form is what ``trio-durable inspect NAMESPACE:NAME`` takes.
    """
    if object_id.name is not None:
        return f"{object_id.namespace}:{object_id.name}"
    return f"{object_id.namespace}:{object_id.hex[:16]}…"


#: The object whose code the current task is running (``None`` outside
#: objects). The watchdog reads it from a blocked task's context.
CURRENT_OBJECT: Final[contextvars.ContextVar[LiveObject | None]] = contextvars.ContextVar(
    "trio_durable_current_object", default=None
)


def current_object() -> LiveObject | None:
    """The live object whose code the current task is running, if any."""
    return CURRENT_OBJECT.get()


class State(enum.Enum):
    """Where a :class:`LiveObject` is in its life."""

    ACTIVATING = "activating"  # waiting for a predecessor to close
    LIVE = "live"
    CLOSING = "closing"  # evicting or resetting: no new events
    CLOSED = "closed"


BackgroundWork = tuple[Callable[..., Awaitable[Any]], tuple[Any, ...]]
#: What must finish before an activation is built (awaited by its activation task).
Preparation = Callable[[], Awaitable[None]]


@attrs.define(eq=False, slots=True)
class Counters:
    """Mutable counters behind ``Runtime.statistics()``."""

    activations: int = 0
    evictions: int = 0
    resets: int = 0
    events_dispatched: int = 0


class Supervisor(Protocol):
    """What a live object needs from the registry that supervises it."""

    hibernate_after: float
    evict_after: float
    counters: Counters
    #: Called before each event's handler; raises to refuse the event (a
    #: cluster refuses events for objects whose shard it no longer holds).
    admit: Callable[[LiveObject], None] | None

    def schedule(self, record: LiveObject, deadline: float) -> None:
        """Make sure ``record``'s eviction check runs no later than ``deadline``."""

    def start_task(self, async_fn: Callable[[], Awaitable[None]]) -> None:
        """Run ``async_fn()`` as a task of the registry (an object's host task)."""

    def construct(self, record: LiveObject) -> None:
        """Build the user's instance of ``record`` (runs the constructor)."""

    def preparation(self, record: LiveObject) -> Preparation | None:
        """What must finish before ``record`` is built (``None``: build it at once)."""

    def object_reset(self, record: LiveObject, aborted: bool) -> None:
        """``record`` was reset (``aborted``: by ``ctx.abort()``)."""

    def object_closed(self, record: LiveObject) -> None:
        """``record`` has fully ended (evicted, reset or shut down)."""


class LiveObject:
    """One activation of one object ID (internal)."""

    __slots__ = (
        "_cancel_requested",
        "_closed_event",
        "_evict_requested",
        "_hosted",
        "busy",
        "handler_scopes",
        "idle_since",
        "input_gate",
        "instance",
        "key",
        "last_event",
        "nursery",
        "object_class",
        "object_id",
        "output_gate",
        "pending_background",
        "pins",
        "predecessor",
        "registry",
        "reset_reason",
        "scheduled_at",
        "socket_pins",
        "state",
    )

    def __init__(
        self,
        registry: Supervisor,
        object_id: DurableObjectId,
        object_class: type,
        predecessor: LiveObject | None,
        *,
        deferred: bool = False,
    ) -> None:
        self.registry = registry
        self.object_id = object_id
        # The user's class: the core never calls it (the registry's builder does).
        self.object_class = object_class
        self.key = (object_id.namespace, object_id.hex)
        self.predecessor = predecessor
        deferred = deferred or predecessor is not None
        self.state = State.ACTIVATING if deferred else State.LIVE
        self.instance: Any = None
        self.input_gate = InputGate()
        self.output_gate = OutputGate()
        # Set when the object is cancelled before its host task opened its nursery.
        self._cancel_requested = False
        # True once a host task runs for this activation (it then closes it).
        self._hosted = False
        self.nursery: trio.Nursery | None = None
        # Background work waiting for the host task's nursery (lazily a list).
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
        self._evict_requested = False

    def __repr__(self) -> str:
        oid = self.object_id
        return f"<LiveObject {oid.namespace}:{oid.hex[:12]}… {self.state.value}>"

    # ----------------------------------------------------------------- checks

    @property
    def is_closed(self) -> bool:
        """True once this activation has fully ended."""
        return self.state is State.CLOSED

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
        if self.state is State.ACTIVATING:
            return  # re-armed once it is built
        deadline = self.eviction_deadline()
        if deadline > now:
            self.registry.schedule(self, deadline)
            return
        # Synchronous from the check to the close: no event can be admitted
        # in between, so an idle object is never evicted under a new event.
        if self.reset_reason is None:
            self.registry.counters.evictions += 1
            if LIFECYCLE_LOGGER.isEnabledFor(_INFO):
                what, why = self._eviction_cause()
                LIFECYCLE_LOGGER.info("%s %s (%s)", what, describe(self.object_id), why)
        self.state = State.CLOSING
        self._close()

    def _eviction_cause(self) -> tuple[str, str]:
        if self._evict_requested:
            return "evicted", "asked to"
        if self.pins:
            after = self.registry.evict_after
            return "evicted", f"no event for {after:g} s; background work cancelled"
        return "hibernated", f"idle for {self.registry.hibernate_after:g} s"

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
        """Run ``async_fn(*args)`` in the object's nursery, pinning the object.

        The first background work of an activation starts its host task.
        """
        self.pin()
        if self.nursery is not None:
            self.nursery.start_soon(self._run_background, async_fn, args)
            return
        if self.pending_background is None:
            self.pending_background = []
        self.pending_background.append((async_fn, args))
        if not self._hosted:
            self._hosted = True
            self.registry.start_task(self._host)

    async def _run_background(
        self, async_fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]
    ) -> None:
        CURRENT_OBJECT.set(self)
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
        if LIFECYCLE_LOGGER.isEnabledFor(_INFO):
            LIFECYCLE_LOGGER.info("reset %s (%s): %r", describe(self.object_id), origin, reason)
        self.reset_reason = reason
        self.state = State.CLOSING
        self.registry.counters.resets += 1
        self._cancel_everything()
        self.registry.object_reset(self, abort)

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
        self.input_gate.force_open()
        self._close()

    # -------------------------------------------------------------- closing

    def _close(self) -> None:
        """End this activation (state is CLOSING): at once, or once its host task ends."""
        if self.predecessor is not None:
            return  # still activating: the task waiting for the predecessor finishes it
        if self.nursery is not None:
            self.nursery.cancel_scope.cancel()  # the host task closes it on its way out
        elif self._hosted:
            self._cancel_requested = True  # the host task has not opened its nursery yet
        elif self.state is not State.CLOSED:
            self._finish_close()

    def _finish_close(self) -> None:
        self.state = State.CLOSED
        self.instance = None
        self.pending_background = None
        self.registry.object_closed(self)
        if self._closed_event is not None:
            self._closed_event.set()

    async def _host(self) -> None:
        """The object's own task, while it has background work: its nursery and scope."""
        try:
            # The nursery's cancel scope is the object's cancel scope.
            async with trio.open_nursery() as nursery:
                if self._cancel_requested:
                    return
                self.nursery = nursery
                for async_fn, args in self.pending_background or ():
                    nursery.start_soon(self._run_background, async_fn, args)
                self.pending_background = None
                await trio.sleep_forever()  # until the object closes
        finally:
            self.nursery = None
            if self.state is State.LIVE:  # cancelled from outside: the runtime is closing
                self.state = State.CLOSING
            self._finish_close()

    async def activate_later(self, preparation: Preparation | None) -> None:
        """(Task) build ours once the previous activation closed and the preparation is done.

        Without a predecessor, ``preparation`` is what the registry asked for
        when it created this activation; after one, it is asked for once the
        predecessor is gone (whose last commits may change what is needed).
        """
        predecessor = self.predecessor
        if predecessor is not None:
            try:
                await predecessor.wait_closed()
            finally:
                self.predecessor = None
                if self.state is State.CLOSING:  # reset before it was ever built
                    self._finish_close()
            if self.state is not State.ACTIVATING:
                return
            preparation = self.registry.preparation(self)
        if preparation is not None:
            try:
                await preparation()
            except Exception as exc:
                self.reset(exc, origin="activation")
                return
            if self.state is not State.ACTIVATING:
                return  # reset (or shut down) while it was being prepared
        try:
            self.registry.construct(self)
        except Exception as exc:
            self.reset(exc, origin="constructor")
            return
        self.state = State.LIVE
        self.input_gate.open_after_activation()
        if self._evict_requested:
            self.state = State.CLOSING
        self._reschedule()

    async def wait_closed(self) -> None:
        """Wait until this activation has fully closed."""
        if self.state is State.CLOSED:
            await trio.lowlevel.checkpoint()
            return
        if self._closed_event is None:
            self._closed_event = trio.Event()
        await self._closed_event.wait()

    # ----------------------------------------------------------------- events

    async def run_event(self, handler: Callable[[Any], Awaitable[Any]]) -> Any:
        """Admit one event through the gates and run ``handler(instance)``.

        The event counts as busy from arrival, so the object is not evicted
        while it waits its turn. The reply waits for the output gate.
        """
        self.begin_event()
        scope = trio.CancelScope()
        self.handler_scopes.add(scope)
        token = CURRENT_OBJECT.set(self)
        try:
            with scope:
                await self.input_gate.pass_through()
                instance = self.instance
                if instance is None:
                    raise ObjectResetError("the object was reset before the event started")
                admit = self.registry.admit
                if admit is not None:
                    admit(self)
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
            CURRENT_OBJECT.reset(token)
            self.handler_scopes.discard(scope)
            self.end_event()
