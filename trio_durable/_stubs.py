"""Namespaces, stubs and the dispatch of calls to objects.

A :class:`Namespace` mints the IDs of one object class and hands out
:class:`Stub` handles. A stub turns ``await stub.method(...)`` into an
:class:`Invocation` and gives it to the namespace's :class:`Dispatcher`. In
one process the dispatcher is :class:`LocalDispatcher`: it activates the
object in the registry and runs the call as one of its events. A cluster
plugs in a dispatcher that routes the call to the process owning the
object; stubs and namespaces do not change.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Final, Generic, Protocol, TypeVar, cast

import trio

from . import _codec
from ._core._budget import cooperative_yield
from ._core._live import State, current_object
from ._core._registry import Registry
from ._http import Request, Response
from ._ids import DurableObjectId, IdMinter

__all__ = [
    "HANDLER_NAMES",
    "Dispatcher",
    "FetchWatcher",
    "Invocation",
    "LocalDispatcher",
    "Namespace",
    "Stub",
    "rpc_methods",
    "typed_namespace",
]

#: The object class a typed namespace's stubs stand for.
ObjectT = TypeVar("ObjectT")

#: Methods the runtime calls itself; a stub refuses them.
HANDLER_NAMES: Final = frozenset(
    {"alarm", "websocket_message", "websocket_close", "websocket_error"}
)


class Invocation:
    """One call to an object: a method name and its arguments.

    This is the unit a :class:`Dispatcher` carries. Its arguments are the
    caller's own values: the dispatcher copies them (in one process) or
    encodes them (across processes) before the object sees them, so caller
    and object never share a mutable value. (A slotted plain class, not
    attrs: it is built once per call and sits on the hot path.)
    """

    __slots__ = ("args", "kwargs", "method")

    def __init__(
        self, method: str, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> None:
        self.method = method
        self.args = args
        self.kwargs = kwargs if kwargs is not None else {}

    def __repr__(self) -> str:
        return f"Invocation({self.method!r}, {self.args!r}, {self.kwargs!r})"


#: Called (in the calling task) as a ``fetch`` is about to run; returns the
#: function to call, in the same task, once it is over: with its response, or
#: ``None`` when it raised. The socket hub passes one in, to drop the
#: WebSockets a failed fetch accepted (nothing in this layer knows sockets).
FetchWatcher = Callable[[], Callable[[Response | None], None]]


class Dispatcher(Protocol):
    """Delivers calls to objects, wherever they live."""

    async def invoke(
        self, namespace: Namespace[Any], object_id: DurableObjectId, invocation: Invocation
    ) -> Any:
        """Run ``invocation`` on the object and return its result (or raise its error)."""


_rpc_method_cache: dict[type, frozenset[str]] = {}


def rpc_methods(cls: type) -> frozenset[str]:
    """The names a stub may call on ``cls``: public async methods, not handlers."""
    cached = _rpc_method_cache.get(cls)
    if cached is not None:
        return cached
    names = set()
    for name in dir(cls):
        if name.startswith("_") or name in HANDLER_NAMES:
            continue
        if inspect.iscoroutinefunction(getattr(cls, name, None)):
            names.add(name)
    result = _rpc_method_cache[cls] = frozenset(names)
    return result


def _refuse_reason(cls: type, name: str) -> tuple[type[Exception], str] | None:
    if name in rpc_methods(cls):
        return None
    owner = cls.__name__
    if name.startswith("_"):
        return AttributeError, f"{name!r} is private: a stub only calls public methods of {owner}"
    if name in HANDLER_NAMES:
        return TypeError, (
            f"{owner}.{name} is an event handler that the runtime calls itself; "
            "it cannot be called through a stub"
        )
    if not hasattr(cls, name):
        return AttributeError, f"{owner} has no method {name!r}"
    return TypeError, f"{owner}.{name} is not an async method, so it cannot be called over RPC"


class LocalDispatcher:
    """Runs calls on objects of this process's registry.

    Args:
        registry: Where the objects live.
        watch_fetch: Told about every ``fetch`` it runs and how it ended.
    """

    __slots__ = ("_registry", "_watch_fetch")

    def __init__(self, registry: Registry, *, watch_fetch: FetchWatcher | None = None) -> None:
        self._registry = registry
        self._watch_fetch = watch_fetch

    async def invoke(
        self, namespace: Namespace[Any], object_id: DurableObjectId, invocation: Invocation
    ) -> Any:
        """Dispatch one call to an object and return a copy of its result.

        Arguments and result are copied through the value codec, as they
        would be between processes (values that cannot change are shared,
        at the cost of a type check). When the caller is itself an object's
        handler, it re-enters its own input gate after the call, so a
        ``block_concurrency_while`` in the caller holds back the reply.

        Raises:
            TypeError: an argument or the result is not data (a function, a
                lock...); the message names it and where it sits. An argument
                is refused before the object is activated.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        method_name = invocation.method
        args = _codec.copy_value(invocation.args, where="args")
        kwargs = invocation.kwargs
        if kwargs:
            kwargs = _codec.copy_value(kwargs, where="kwargs")
        caller = current_object()
        record = self._registry.activate(object_id, namespace.object_class)

        async def handler(instance: Any) -> Any:
            return await getattr(instance, method_name)(*args, **kwargs)

        watch = self._watch_fetch
        settle = watch() if watch is not None and method_name == "fetch" else None
        try:
            try:
                result = await record.run_event(handler)
            except BaseException:
                if settle is not None:
                    settle(None)
                raise
            if settle is not None:
                settle(result if isinstance(result, Response) else None)
        finally:
            if caller is not None and caller is not record and caller.state is not State.CLOSED:
                await caller.input_gate.pass_through()
        # Every call is a cancellation point (above) and, on the cooperative
        # budget, a schedule point: a loop of calls to handlers that never
        # block cannot starve other tasks for more than about a millisecond.
        await cooperative_yield()
        return _codec.copy_value(result, where="result")


class Namespace(Generic[ObjectT]):
    """The IDs and stubs of one object class (``runtime.namespace("rooms")``).

    Made by the runtime; not publicly constructible. Asked for with its
    class, ``runtime.namespace("counters", Counter)`` is a
    ``Namespace[Counter]``: its stubs are typed as ``Counter``, so a type
    checker verifies the methods called on them and their arguments (at
    run time they are :class:`Stub` objects all the same).
    """

    __slots__ = ("__weakref__", "_dispatcher", "_minter", "name", "object_class")

    def __init__(
        self, name: str, object_class: type, minter: IdMinter, dispatcher: Dispatcher
    ) -> None:
        self.name = name
        self.object_class = object_class
        self._minter = minter
        self._dispatcher = dispatcher

    def __repr__(self) -> str:
        return f"<Namespace {self.name!r} of {self.object_class.__name__}>"

    def id_from_name(self, name: str) -> DurableObjectId:
        """The ID for ``name``: the same name always gives the same ID."""
        return self._minter.from_name(self.name, name)

    def new_unique_id(self) -> DurableObjectId:
        """A fresh random ID that no name maps to."""
        return self._minter.unique(self.name)

    def id_from_string(self, hex_id: str) -> DurableObjectId:
        """Rebuild an ID from its 64-hex form (``str(id)``).

        Raises:
            ValueError: the string is not 64 hex characters, or was not minted
                by this namespace of this deployment (forged or foreign).
        """
        return self._minter.from_string(self.name, hex_id)

    def get(self, object_id: DurableObjectId) -> ObjectT:
        """A stub for ``object_id``. Creates nothing: the first call activates the object.

        Raises:
            TypeError: ``object_id`` is not a ``DurableObjectId``.
            ValueError: it belongs to another namespace, or was forged.
        """
        return cast(ObjectT, Stub(self, self._minter.check(self.name, object_id)))

    def get_by_name(self, name: str) -> ObjectT:
        """Shorthand for ``get(id_from_name(name))``."""
        return cast(ObjectT, Stub(self, self.id_from_name(name)))


def typed_namespace(namespace: Namespace[Any], object_class: type[ObjectT]) -> Namespace[ObjectT]:
    """``namespace`` as a ``Namespace[object_class]``, once its class is checked.

    Raises:
        TypeError: the namespace serves another class.
    """
    if not (isinstance(object_class, type) and issubclass(namespace.object_class, object_class)):
        raise TypeError(
            f"namespace {namespace.name!r} serves {namespace.object_class.__qualname__}, "
            f"not {getattr(object_class, '__qualname__', object_class)!r}"
        )
    return cast("Namespace[ObjectT]", namespace)


class Stub:
    """A handle on one object: ``await stub.fetch(request)``, ``await stub.method(...)``.

    Getting a stub is free and creates nothing; the first call activates the
    object. Handlers (``alarm``, ``websocket_*``), private names and
    non-async attributes are refused.
    """

    __slots__ = ("_methods", "_namespace", "id")

    def __init__(self, namespace: Namespace[Any], object_id: DurableObjectId) -> None:
        self._namespace = namespace
        self.id = object_id
        self._methods: dict[str, Callable[..., Awaitable[Any]]] = {}

    @property
    def name(self) -> str | None:
        """The name the ID was made from, or ``None`` for unique IDs."""
        return self.id.name

    @property
    def namespace(self) -> Namespace[Any]:
        """The namespace this stub belongs to."""
        return self._namespace

    def __repr__(self) -> str:
        return f"<Stub {self._namespace.name}:{self.id.hex[:12]}…>"

    async def fetch(self, request: Request) -> Response:
        """Send ``request`` to the object's ``fetch`` handler and return its response.

        Raises:
            TypeError: ``request`` is not a :class:`Request`, or ``fetch``
                did not return a :class:`Response`.
            ObjectResetError: the object was reset while the call waited.
            Exception: whatever ``fetch`` raised, with its original type.
        """
        if not isinstance(request, Request):
            raise TypeError(f"fetch() takes a trio_durable.Request, got {type(request).__name__}")
        namespace = self._namespace
        refusal = _refuse_reason(namespace.object_class, "fetch")
        if refusal is not None:
            raise refusal[0](refusal[1])
        response = await namespace._dispatcher.invoke(
            namespace, self.id, Invocation("fetch", (request,))
        )
        if not isinstance(response, Response):
            raise TypeError(
                f"{namespace.object_class.__name__}.fetch returned "
                f"{type(response).__name__}, not a trio_durable.Response"
            )
        return response

    def __getattr__(self, method: str) -> Callable[..., Awaitable[Any]]:
        try:
            return self._methods[method]
        except KeyError:
            pass
        refusal = _refuse_reason(self._namespace.object_class, method)
        if refusal is not None:
            raise refusal[0](refusal[1])
        namespace = self._namespace
        invoke = namespace._dispatcher.invoke
        object_id = self.id

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await invoke(namespace, object_id, Invocation(method, args, kwargs))

        call.__name__ = method
        call.__qualname__ = f"Stub.{method}"
        self._methods[method] = call
        return call


# A stub crosses RPC as a reference to its object, never as a copy.
_codec.register_handle_type(
    Stub, name="stub", to_ref=lambda stub: (stub.id.namespace, stub.id.hex, stub.id.name)
)
