"""The composition root: :class:`Runtime` and :func:`open_runtime`.

This is the one module that knows every part and wires them together: the
registry of live objects, the storage engine and each object's storage, the
alarm scheduler, the socket hub, the watchdog and the namespaces. Nothing
below reaches back up to it; each part gets what it needs here, as an
argument. Leaving ``open_runtime`` cancels every object, commits what is
buffered and closes the backend; no ExceptionGroup of ours reaches the caller.
"""

from __future__ import annotations

import inspect
import logging
import os
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Final, overload

import trio

from ._alarms import AlarmScheduler
from ._cluster._dispatch import ClusterDispatcher
from ._cluster._leases import LeaseHints
from ._cluster._link import link_key
from ._cluster._member import ClusterMember, ClusterSpec
from ._cluster._remote import AppClasses
from ._cluster._shards import LocalShards
from ._core._clock import WallClock
from ._core._live import LiveObject
from ._core._registry import Registry
from ._gc_tuning import tuned_gc
from ._ids import DurableObjectId, IdMinter, shard_of
from ._limits import (
    EVICT_AFTER,
    HIBERNATE_AFTER,
    MAX_ATTACHMENT_BYTES,
    MAX_VALUE_BYTES,
    MAX_WEBSOCKETS_PER_OBJECT,
    STORAGE_CACHE_BYTES,
    WATCHDOG_RESET_AFTER,
    WATCHDOG_WARN_AFTER,
)
from ._object import DurableObject, ObjectContext, ObjectServices
from ._runtime_options import RuntimeOptions
from ._runtime_statistics import RuntimeStatistics
from ._runtime_storage import choose_backend, lease_store_for
from ._storage._backend import Backend, ObjectEntry
from ._storage._engine import StorageEngine
from ._storage._service import StorageService
from ._stubs import Dispatcher, LocalDispatcher, Namespace, ObjectT, typed_namespace
from ._watchdog import Watchdog, open_watchdog
from ._websocket._hub import SocketHub, SocketLimits

__all__ = ["Runtime", "RuntimeOptions", "RuntimeStatistics", "open_runtime", "runtime_of"]

logger: Final = logging.getLogger("trio_durable")

# Each namespace's runtime, for the testing helpers that start from a stub.
_runtime_of_namespace: Final[weakref.WeakKeyDictionary[Namespace[Any], Runtime]] = (
    weakref.WeakKeyDictionary()
)


def runtime_of(namespace: Namespace[Any]) -> Runtime:
    """The runtime that made ``namespace``.

    Raises:
        LookupError: ``namespace`` was not made by a runtime of this process.
    """
    try:
        return _runtime_of_namespace[namespace]
    except KeyError:
        raise LookupError(f"{namespace!r} does not belong to a runtime") from None


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
        options: RuntimeOptions,
        cluster: ClusterSpec | None = None,
    ) -> None:
        self.env = env
        self._cluster_spec = cluster
        #: This process's membership of a cluster (``None`` in a single process).
        self.cluster: ClusterMember | None = None
        # The cluster's lease store, when it can hint at other members' changes.
        self._lease_hints: LeaseHints | None = None
        self.backend = backend
        self.options = options
        self.clock = WallClock()
        self.registry = Registry(
            self._build,
            hibernate_after=options.hibernate_after,
            evict_after=options.evict_after,
        )
        self.storage_engine = StorageEngine(backend, max_value_bytes=options.max_value_bytes)
        self.storages = StorageService(self.storage_engine, cache_bytes=options.storage_cache_bytes)
        self.registry.close_listeners.append(self.storages.forget)
        self.registry.prepare = self.storages.prepare
        self._object_classes: dict[str, type[DurableObject]] = dict(objects)
        self.alarms = AlarmScheduler(
            backend=backend,
            registry=self.registry,
            storages=self.storages,
            clock=self.clock,
            classes=self._object_classes,
            owns=self._holds if cluster is not None else None,
        )
        self.storage_engine.commit_listeners.append(self.alarms.on_commit)
        self.sockets = SocketHub(
            self.registry,
            SocketLimits(
                max_sockets_per_object=options.max_websockets_per_object,
                max_attachment_bytes=options.max_attachment_bytes,
            ),
            self.clock,
        )
        self.watchdog: Watchdog | None = None
        self._nursery: trio.Nursery | None = None
        self._local_dispatcher = LocalDispatcher(
            self.registry, watch_fetch=self.sockets.watch_fetch
        )
        self._dispatcher: Dispatcher = self._local_dispatcher
        self._services = ObjectServices(
            storages=self.storages, sockets=self.sockets, clock=self.clock, namespace=self.namespace
        )
        self._namespaces: dict[str, Namespace[Any]] = {}
        # IDs activated since the backend last recorded them (written in batches).
        self._unrecorded: dict[tuple[str, str], DurableObjectId] = {}
        self._unrecorded_added = trio.Event()
        self.registry.activation_listeners.append(self._note_activation)
        self._closed = False

    def _bind(self, secret: bytes) -> None:
        if self._cluster_spec is not None:
            self._join_cluster(self._cluster_spec, secret)
        minter = IdMinter(secret)
        for name, cls in self._object_classes.items():
            namespace: Namespace[Any] = Namespace(name, cls, minter, self._dispatcher)
            self._namespaces[name] = namespace
            _runtime_of_namespace[namespace] = self

    def _join_cluster(self, spec: ClusterSpec, secret: bytes) -> None:
        shards = LocalShards(
            self.registry, self.alarms, self.sockets, self.storage_engine, self._spawn
        )
        store = lease_store_for(self.backend)
        member = ClusterMember(spec, store, link_key(secret), shards)
        self.cluster = member
        self._lease_hints = store if isinstance(store, LeaseHints) else None
        shards.holds = member.holds
        shards.storage_unreachable = member.storage_unreachable
        self.registry.admit = member.admit
        self.storage_engine.fence = member.fence
        app_roots = {cls.__module__.split(".")[0] for cls in self._object_classes.values()}
        dispatcher = ClusterDispatcher(
            member, self._local_dispatcher, self.namespace, AppClasses(app_roots)
        )
        dispatcher.runtime = self
        dispatcher.shards = shards
        shards.send_sockets = dispatcher.send_sockets
        self._dispatcher = dispatcher

    def _holds(self, hex_id: str) -> bool:
        return self.cluster is not None and self.cluster.holds(shard_of(hex_id))

    def _spawn(self, async_fn: Callable[[], Awaitable[None]]) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(async_fn)

    def _build(self, record: LiveObject) -> DurableObject:
        ctx = ObjectContext(record, self._services)
        instance: DurableObject = record.object_class(ctx=ctx, env=self.env)
        return instance

    def __repr__(self) -> str:
        return f"<Runtime namespaces={sorted(self._namespaces)}>"

    def wall_time(self) -> float:
        """Now in epoch seconds, by the runtime's clock (Trio's clock plus a fixed offset).

        Alarm times are compared with this clock, so under a Trio
        ``MockClock`` ``set_alarm(runtime.wall_time() + 10)`` fires exactly
        10 seconds of Trio time later.
        """
        return self.clock.now()

    @property
    def closed(self) -> bool:
        """True once ``open_runtime`` has exited."""
        return self._closed

    @overload
    def namespace(self, name: str) -> Namespace[Any]: ...

    @overload
    def namespace(self, name: str, object_class: type[ObjectT]) -> Namespace[ObjectT]: ...

    def namespace(self, name: str, object_class: type[Any] | None = None) -> Namespace[Any]:
        """The namespace registered as ``name`` in ``open_runtime(objects=...)``.

        With ``object_class`` (``runtime.namespace("counters", Counter)``) it
        is typed: its stubs are typed as that class, so a type checker
        verifies the methods called on them and their arguments.

        Raises:
            KeyError: no such namespace; the message lists the known ones.
            TypeError: the namespace serves another class than ``object_class``.
        """
        try:
            namespace = self._namespaces[name]
        except KeyError:
            known = ", ".join(sorted(self._namespaces)) or "none"
            raise KeyError(f"no namespace {name!r}; this runtime has: {known}") from None
        return namespace if object_class is None else typed_namespace(namespace, object_class)

    def statistics(self) -> RuntimeStatistics:
        """A snapshot of the runtime's counters; wakes no object.

        See ``docs/lifecycle.md`` (statistics and metrics) for what each
        counts, and ``trio-durable serve --metrics-port`` for the same in
        Prometheus' text format.
        """
        counters = self.registry.counters
        registry = self.registry
        sockets = self.sockets
        hibernated = sum(
            1 for key in sockets.objects_with_sockets() if registry.lookup(*key) is None
        )
        connections, parked = sockets.network_connections()
        cache = self.storages.cache_budget
        return RuntimeStatistics(
            live_objects=len(registry),
            activations=counters.activations,
            evictions=counters.evictions,
            resets=counters.resets,
            events_dispatched=counters.events_dispatched,
            hibernated_objects=hibernated,
            hibernatable_websockets=sockets.hibernatable_count(),
            connections_awake=max(0, connections - parked),
            connections_parked=parked,
            messages_received=sockets.messages_received,
            messages_sent=sockets.messages_sent,
            auto_responses=sockets.auto_responses,
            commits=self.storage_engine.commits,
            commit_seconds=self.storage_engine.commit_seconds,
            alarms_fired=self.alarms.started,
            alarm_lag_seconds=self.alarms.lag_seconds,
            storage_cache_bytes=cache.used,
            storage_cache_budget_bytes=cache.max_bytes,
            storage_cache_evictions=cache.evictions,
        )

    async def list_object_ids(self, namespace: str) -> list[DurableObjectId]:
        """Every ID of ``namespace`` ever activated or holding data, ordered by ID."""
        ns = self.namespace(namespace)
        await self._record_new_objects()
        entries = await self.backend.list_objects(namespace)
        return [DurableObjectId(ns.name, entry.hex_id, entry.name) for entry in entries]

    def _note_activation(self, record: LiveObject) -> None:
        if not self._unrecorded:
            self._unrecorded_added.set()
        self._unrecorded[record.key] = record.object_id

    async def _record_new_objects(self) -> None:
        pending = self._unrecorded
        if not pending:
            return
        self._unrecorded = {}
        entries = [ObjectEntry(ns, hex_id, oid.name) for (ns, hex_id), oid in pending.items()]
        try:
            await self.backend.record_objects(entries)
        except BaseException:
            # Keep them for the next attempt: losing them would hide objects.
            self._unrecorded.update(pending)
            raise

    async def _run_recorder(self) -> None:
        # Activations are recorded in batches, off the activation path.
        while True:
            await self._unrecorded_added.wait()
            self._unrecorded_added = trio.Event()
            await trio.sleep(0.05)  # gather a batch
            try:
                await self._record_new_objects()
            except Exception:
                logger.exception("could not record new object IDs; will retry")


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


@asynccontextmanager
async def open_runtime(
    objects: Mapping[str, type[DurableObject]],
    data_dir: str | os.PathLike[str] | None = None,
    *,
    database: str | None = None,
    env: Any = None,
    hibernate_after: float = HIBERNATE_AFTER,
    evict_after: float = EVICT_AFTER,
    backend: Backend | None = None,
    max_value_bytes: int = MAX_VALUE_BYTES,
    storage_cache_bytes: int = STORAGE_CACHE_BYTES,
    max_websockets_per_object: int = MAX_WEBSOCKETS_PER_OBJECT,
    max_attachment_bytes: int = MAX_ATTACHMENT_BYTES,
    blocking_warning_after: float | None = WATCHDOG_WARN_AFTER,
    blocking_reset_after: float | None = WATCHDOG_RESET_AFTER,
    tune_gc: bool = False,
    cluster: ClusterSpec | None = None,
) -> AsyncIterator[Runtime]:
    """Open a runtime serving the given object classes.

    ::

        async with td.open_runtime(objects={"counters": Counter}, data_dir="data") as runtime:
            stub = runtime.namespace("counters").get_by_name("home")
            await stub.increment()

    Every option is checked when this is called, before anything opens: a
    bad value raises ``TypeError`` or ``ValueError`` naming the option.

    Args:
        objects: Namespace name → :class:`DurableObject` subclass.
        data_dir: Where the embedded SQLite storage lives; ``None`` keeps
            everything in memory (lost when the runtime closes).
        database: A ``postgresql://user@host:port/dbname`` URL: keep
            everything in that PostgreSQL database instead of ``data_dir``
            (``docs/postgres.md``; needs the ``postgres`` extra). The tables
            are created or migrated at start.
        env: Any value; objects see it as ``self.env``.
        hibernate_after: Seconds an object may sit idle (no handler, no
            background work, no standard socket) before it is evicted.
        evict_after: Seconds without an event after which an object kept
            awake only by background work is evicted anyway.
        backend: A storage backend to use instead of SQLite in ``data_dir``
            (for example ``SqliteBackend(path, durability="power")``).
            ``data_dir``, ``database`` and ``backend`` exclude each other.
        max_value_bytes: Largest serialized value ``ctx.storage.put`` accepts
            (default 2 MiB), and the largest string, BLOB or row in user SQL.
        storage_cache_bytes: How much the key-value caches of all live
            objects may hold together (default 64 MiB); past it, the caches
            of the least recently used objects are emptied.
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
        tune_gc: Tune Python's garbage collector for many live objects while
            the runtime is open: ``gc.freeze()`` of everything that exists at
            start-up and higher collection thresholds (restored on exit).
            Process-wide, so off by default for a runtime embedded in
            another application; ``trio-durable serve`` turns it on. See
            ``docs/lifecycle.md``.
        cluster: Run as one worker process of a cluster (``docs/cluster.md``):
            objects of the shards this process holds run here, calls to the
            others go to the process that holds them. Set by the cluster's
            supervisor (``trio-durable serve --workers N``); ``None`` runs
            every object in this process.

    On exit every object is cancelled and the backend is closed. Cancelling
    the block cancels them the same way.
    """
    _check_objects(objects)
    options = RuntimeOptions(
        hibernate_after=hibernate_after,
        evict_after=evict_after,
        max_value_bytes=max_value_bytes,
        storage_cache_bytes=storage_cache_bytes,
        max_websockets_per_object=max_websockets_per_object,
        max_attachment_bytes=max_attachment_bytes,
        blocking_warning_after=blocking_warning_after,
        blocking_reset_after=blocking_reset_after,
        tune_gc=tune_gc,
    )
    backend = choose_backend(data_dir=data_dir, database=database, backend=backend, cluster=cluster)
    await backend.open()
    runtime = Runtime(objects=objects, backend=backend, env=env, options=options, cluster=cluster)
    try:
        runtime._bind(await backend.load_secret())
        runtime.clock.start()
        if cluster is None:
            await runtime.alarms.load()  # in a cluster: by shard, as they are taken
        with (
            _unwrap_single_exception(),
            tuned_gc(options.tune_gc),
            open_watchdog(
                runtime.registry,
                warn_after=options.blocking_warning_after,
                reset_after=options.blocking_reset_after,
            ) as runtime.watchdog,
        ):
            async with trio.open_nursery() as nursery:
                runtime._nursery = nursery
                await nursery.start(runtime.registry.run)
                nursery.start_soon(runtime._run_recorder)
                nursery.start_soon(runtime.storage_engine.run)
                nursery.start_soon(runtime.alarms.run)
                await nursery.start(runtime.sockets.run)
                runtime.sockets.bind_to_current_task()
                if runtime.cluster is not None:
                    # Serve only once the first lease round says what is ours.
                    await nursery.start(runtime.cluster.run)
                    hints = runtime._lease_hints
                    if hints is not None:
                        # Another member's lease change starts our round at
                        # once instead of at the next interval.
                        nursery.start_soon(hints.watch, runtime.cluster.request_round)
                try:
                    yield runtime
                finally:
                    runtime._closed = True
                    runtime.registry.shutdown()
                    nursery.cancel_scope.cancel()
        with trio.CancelScope(shield=True):
            await runtime.storage_engine.flush()
            await runtime._record_new_objects()
    finally:
        runtime._closed = True
        with trio.CancelScope(shield=True):
            await backend.aclose()
