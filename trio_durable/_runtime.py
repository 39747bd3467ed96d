"""The :class:`Runtime` and :func:`open_runtime`.

A runtime owns the registry of live objects, the storage backend, and (once
the gateway runs) the connection nursery of hibernatable sockets. Leaving
``open_runtime`` cancels every object, records what must be recorded and
closes the backend; no ExceptionGroup of ours reaches the caller.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import attrs
import trio

from ._alarms import AlarmScheduler
from ._convert import make_runtime_converter
from ._ids import DurableObjectId, Namespace
from ._object import DurableObject
from ._registry import Registry
from ._storage._backend import Backend, ObjectEntry
from ._storage._engine import StorageEngine
from ._storage._limits import DEFAULT_MAX_VALUE_BYTES
from ._storage.sqlite import SqliteBackend
from ._watchdog import (  # faults (issue 6)
    DEFAULT_BLOCKING_RESET_AFTER,
    DEFAULT_BLOCKING_WARNING_AFTER,
    Watchdog,
    open_watchdog,
)
from ._websocket._hub import SocketHub, SocketLimits

__all__ = ["Runtime", "RuntimeStatistics", "open_runtime"]

logger = logging.getLogger("trio_durable")


@contextmanager
def _unwrap_single_exception() -> Iterator[None]:
    """Re-raise a lone exception out of a nursery's ExceptionGroup.

    The user's own exception from inside ``async with open_runtime()`` comes
    back with its own type, not wrapped in a group of ours.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        if len(leaves) != 1:
            raise
        leaf = leaves[0]
        context = leaf.__context__
        try:
            raise leaf
        finally:
            leaf.__context__ = context
            del leaf


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    result: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            result.extend(_leaves(exc))
        else:
            result.append(exc)
    return result


@attrs.frozen
class RuntimeStatistics:
    """A snapshot of a runtime's counters (:meth:`Runtime.statistics`).

    Attributes:
        live_objects: Activations currently in memory.
        activations: Instances built since the runtime opened.
        evictions: Instances dropped because they were idle (hibernation).
        resets: Instances dropped because of a failure or ``abort()``.
        events_dispatched: Events (calls, fetches, socket events, alarms) that
            reached a handler.
    """

    live_objects: int
    activations: int
    evictions: int
    resets: int
    events_dispatched: int


class Runtime:
    """A running set of durable object namespaces. Made by :func:`open_runtime`.

    Attributes:
        env: The ``env`` given to :func:`open_runtime`; every object sees it
            as ``self.env``.
    """

    def __init__(
        self,
        *,
        objects: Mapping[str, type[DurableObject]],
        backend: Backend,
        env: Any,
        hibernate_after: float,
        evict_after: float,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        socket_limits: SocketLimits | None = None,
    ) -> None:
        self.env = env
        self.backend = backend
        self.registry = Registry(self, hibernate_after=hibernate_after, evict_after=evict_after)
        # --- storage and alarms (issue 4) ---
        self.converter = make_runtime_converter()
        self.storage_engine = StorageEngine(backend, max_value_bytes=max_value_bytes)
        self.alarms = AlarmScheduler(self)
        self.storage_engine.commit_listeners.append(self.alarms.on_commit)
        # --- end storage and alarms ---
        # --- websockets (issue 3) ---
        self.sockets = SocketHub(self.registry, self.converter, socket_limits or SocketLimits())
        # --- end websockets ---
        self.watchdog: Watchdog | None = None  # faults (issue 6)
        self._object_classes = dict(objects)
        self._namespaces: dict[str, Namespace] = {}
        self._closed = False

    def _bind(self, secret: bytes) -> None:
        for name, cls in self._object_classes.items():
            self._namespaces[name] = Namespace(name, cls, secret, self.registry)

    def __repr__(self) -> str:
        return f"<Runtime namespaces={sorted(self._namespaces)}>"

    def wall_time(self) -> float:
        """Now in epoch seconds, by the runtime's clock (Trio's clock plus a fixed offset).

        Alarm times are compared with this clock, so under a Trio
        ``MockClock`` ``set_alarm(runtime.wall_time() + 10)`` fires exactly
        10 seconds of Trio time later.
        """
        return self.alarms.wall_time()

    @property
    def closed(self) -> bool:
        """True once ``open_runtime`` has exited."""
        return self._closed

    def namespace(self, name: str) -> Namespace:
        """The namespace registered as ``name`` in ``open_runtime(objects=...)``.

        Raises:
            KeyError: no such namespace; the message lists the known ones.
        """
        try:
            return self._namespaces[name]
        except KeyError:
            known = ", ".join(sorted(self._namespaces)) or "none"
            raise KeyError(f"no namespace {name!r}; this runtime has: {known}") from None

    def statistics(self) -> RuntimeStatistics:
        """A snapshot of the runtime's counters."""
        counters = self.registry.counters
        return RuntimeStatistics(
            live_objects=len(self.registry),
            activations=counters.activations,
            evictions=counters.evictions,
            resets=counters.resets,
            events_dispatched=counters.events_dispatched,
        )

    async def list_object_ids(self, namespace: str) -> list[DurableObjectId]:
        """Every ID of ``namespace`` ever activated or holding data, ordered by ID."""
        ns = self.namespace(namespace)
        await self._record_new_objects()
        entries = await self.backend.list_objects(namespace)
        return [DurableObjectId(ns.name, entry.hex_id, entry.name) for entry in entries]

    async def _record_new_objects(self) -> None:
        pending = self.registry.unrecorded
        if not pending:
            return
        self.registry.unrecorded = {}
        entries = [ObjectEntry(ns, hex_id, oid.name) for (ns, hex_id), oid in pending.items()]
        try:
            await self.backend.record_objects(entries)
        except BaseException:
            # Keep them for the next attempt: losing them would hide objects.
            self.registry.unrecorded.update(pending)
            raise

    async def _run_recorder(self) -> None:
        # Activations are recorded in batches, off the activation path.
        registry = self.registry
        while True:
            await registry.unrecorded_added.wait()
            registry.unrecorded_added = trio.Event()
            await trio.sleep(0.05)  # gather a batch
            try:
                await self._record_new_objects()
            except Exception:
                logger.exception("could not record new object IDs; will retry")


def _check_objects(objects: Mapping[str, type[DurableObject]]) -> None:
    if not isinstance(objects, Mapping) or not objects:
        raise TypeError("objects must be a non-empty mapping of namespace name to class")
    for name, cls in objects.items():
        if not isinstance(name, str) or not name or name.startswith("_"):
            raise ValueError(
                f"namespace names are non-empty and do not start with '_'; got {name!r}"
            )
        if not (inspect.isclass(cls) and issubclass(cls, DurableObject)):
            raise TypeError(f"objects[{name!r}] must be a DurableObject subclass, got {cls!r}")
        if "__attrs_attrs__" not in vars(cls):  # the subclass itself must be decorated
            raise TypeError(
                f"objects[{name!r}]: {cls.__name__} must be an attrs class "
                "(decorate it with @attrs.define(eq=False))"
            )


def _check_size(name: str, value: int) -> int:  # storage and alarms (issue 4)
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int number of bytes, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return value


def _check_seconds(name: str, value: float) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive, finite number of seconds, got {value!r}")
    return float(value)


@asynccontextmanager
async def open_runtime(
    objects: Mapping[str, type[DurableObject]],
    data_dir: str | os.PathLike[str] | None = None,
    *,
    env: Any = None,
    hibernate_after: float = 10.0,
    evict_after: float = 70.0,
    backend: Backend | None = None,
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
    max_websockets_per_object: int = 32_768,
    max_attachment_bytes: int = 16_384,
    blocking_warning_after: float | None = DEFAULT_BLOCKING_WARNING_AFTER,  # faults (issue 6)
    blocking_reset_after: float | None = DEFAULT_BLOCKING_RESET_AFTER,  # faults (issue 6)
) -> AsyncIterator[Runtime]:
    """Open a runtime serving the given object classes.

    ::

        async with td.open_runtime(objects={"counters": Counter}, data_dir="data") as runtime:
            stub = runtime.namespace("counters").get_by_name("home")
            await stub.increment()

    Args:
        objects: Namespace name → :class:`DurableObject` subclass.
        data_dir: Where the embedded SQLite storage lives; ``None`` keeps
            everything in memory (lost when the runtime closes).
        env: Any value; objects see it as ``self.env``.
        hibernate_after: Seconds an object may sit idle (no handler, no
            background work, no standard socket) before it is evicted.
        evict_after: Seconds without an event after which an object kept
            awake only by background work is evicted anyway.
        backend: A storage backend to use instead of SQLite in ``data_dir``.
        max_value_bytes: Largest serialized value ``ctx.storage.put`` accepts
            (default 2 MiB).
        max_websockets_per_object: Most hibernatable WebSockets one object
            may accept (default 32,768).
        max_attachment_bytes: Largest serialized WebSocket attachment
            (default 16,384 bytes).
        blocking_warning_after: Code that blocks the event loop this
            many seconds (real time) or longer is logged as a warning naming
            the object, the handler and the line (default 1 s; ``None``: no
            warning). See ``docs/faults.md``.
        blocking_reset_after: An object whose code blocks the loop this
            long is also reset (default 30 s; ``None``:
            never). ``None`` for both turns the watchdog off.

    On exit every object is cancelled and the backend is closed. Cancelling
    the block cancels them the same way.
    """
    _check_objects(objects)
    hibernate_after = _check_seconds("hibernate_after", hibernate_after)
    evict_after = _check_seconds("evict_after", evict_after)
    if blocking_warning_after is not None:  # faults (issue 6)
        blocking_warning_after = _check_seconds("blocking_warning_after", blocking_warning_after)
    if blocking_reset_after is not None:  # faults (issue 6)
        blocking_reset_after = _check_seconds("blocking_reset_after", blocking_reset_after)
    if backend is None:
        backend = SqliteBackend(data_dir)
    elif data_dir is not None:
        raise TypeError("pass either data_dir or backend, not both")
    await backend.open()
    runtime = Runtime(
        objects=objects,
        backend=backend,
        env=env,
        hibernate_after=hibernate_after,
        evict_after=evict_after,
        max_value_bytes=_check_size("max_value_bytes", max_value_bytes),
        socket_limits=SocketLimits(
            max_sockets_per_object=_check_size(
                "max_websockets_per_object", max_websockets_per_object
            ),
            max_attachment_bytes=_check_size("max_attachment_bytes", max_attachment_bytes),
        ),
    )
    try:
        runtime._bind(await backend.load_secret())
        runtime.alarms.start_clock()  # storage and alarms (issue 4)
        await runtime.alarms.load()  # storage and alarms (issue 4)
        with (
            _unwrap_single_exception(),
            open_watchdog(  # faults (issue 6)
                runtime.registry,
                warn_after=blocking_warning_after,
                reset_after=blocking_reset_after,
            ) as runtime.watchdog,
        ):
            async with trio.open_nursery() as nursery:
                runtime.registry.attach(nursery)
                nursery.start_soon(runtime.registry.run_timers)
                nursery.start_soon(runtime._run_recorder)
                nursery.start_soon(runtime.storage_engine.run)  # storage and alarms (issue 4)
                nursery.start_soon(runtime.alarms.run)  # storage and alarms (issue 4)
                await nursery.start(runtime.sockets.run)  # websockets (issue 3)
                runtime.sockets.bind_to_current_task()  # websockets (issue 3)
                try:
                    yield runtime
                finally:
                    runtime._closed = True
                    runtime.registry.shutdown()
                    nursery.cancel_scope.cancel()
        with trio.CancelScope(shield=True):
            await runtime.storage_engine.flush()  # storage and alarms (issue 4)
            await runtime._record_new_objects()
    finally:
        runtime._closed = True
        with trio.CancelScope(shield=True):
            await backend.aclose()
