"""The :class:`DurableObject` base class and its :class:`ObjectContext`.

A durable object is an attrs class that subclasses :class:`DurableObject`.
The runtime builds it as ``cls(ctx=..., env=...)`` on activation and again
after every eviction or reset, so every field of its own must have a
default: those fields are in-memory state and go back to their defaults
each time. What must survive goes to ``self.ctx.storage`` (or into a
WebSocket attachment).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar, overload

import attrs

from ._core._clock import WallClock
from ._core._live import LiveObject
from ._exceptions import ObjectResetError
from ._ids import DurableObjectId
from ._storage._facade import Storage
from ._storage._service import StorageService
from ._stubs import Namespace, ObjectT, typed_namespace
from ._websocket._auto_response import WebSocketRequestResponsePair
from ._websocket._checks import check_message
from ._websocket._hub import SocketHub
from ._websocket._socket import WebSocket

__all__ = ["DurableObject", "ObjectContext", "ObjectServices"]

T = TypeVar("T")

logger = logging.getLogger("trio_durable")


@attrs.frozen(eq=False)
class ObjectServices:
    """The runtime's services, as every :class:`ObjectContext` of it reaches them.

    The runtime builds one and gives it to each context it makes: adding a
    service means adding a field here, never reaching into the runtime.

    Attributes:
        storages: Each activation's storage.
        sockets: The hibernatable sockets of every object.
        clock: The runtime's wall clock.
        namespace: Namespace name → :class:`Namespace` (for calls to other objects).
    """

    storages: StorageService
    sockets: SocketHub
    clock: WallClock
    namespace: Callable[[str], Namespace[Any]]


class ObjectContext:
    """What an object knows about itself: ``self.ctx``.

    Built by the runtime, one per activation; not publicly constructible.
    Every method works through the runtime's :class:`ObjectServices`.
    """

    __slots__ = ("_record", "_services", "_storage", "id")

    def __init__(self, record: LiveObject, services: ObjectServices) -> None:
        self._record = record
        self._services = services
        self._storage: Storage | None = None
        self.id: DurableObjectId = record.object_id

    def __repr__(self) -> str:
        return f"<ObjectContext {self.id!r}>"

    @property
    def storage(self) -> Storage:
        """The object's durable storage: key-value (async), ``sql`` (sync) and alarms."""
        storage = self._storage
        if storage is None:
            storage = self._storage = self._services.storages.storage_for(self._record)
        return storage

    # ----------------------------------------------------------- WebSockets

    def accept_websocket(self, ws: WebSocket, tags: Iterable[str] = ()) -> None:
        """Accept the server end of a :class:`WebSocketPair` as a hibernatable socket.

        The socket belongs to the runtime, not to this instance: it stays open
        when the object hibernates, and its messages re-create the object.

        Raises:
            TypeError: ``ws`` is not a server end, or ``tags`` is not a list of str.
            RuntimeError: ``ws`` was already accepted.
            LimitExceededError: more than 10 tags, a tag over 256 UTF-8 bytes,
                or the object already has 32,768 hibernatable sockets.
        """
        self._record.check_alive()
        self._services.sockets.accept(self._record, ws, tags)

    def get_websockets(self, tag: str | None = None) -> list[WebSocket]:
        """The open hibernatable sockets of this object (with ``tag``, if given)."""
        return self._services.sockets.get_websockets(self._record, tag)

    def get_tags(self, ws: WebSocket) -> list[str]:
        """The tags ``ws`` was accepted with."""
        return self._services.sockets.get_tags(self._record, ws)

    async def broadcast(
        self,
        message: str | bytes,
        tag: str | None = None,
        exclude: WebSocket | Iterable[WebSocket] = (),
    ) -> int:
        """Send ``message`` to every open hibernatable socket of this object.

        ``await self.ctx.broadcast(text, exclude=ws)`` is PartyKit's
        ``room.broadcast(text, [ws.id])``: the message is serialized once for
        all the sockets, closing and closed sockets are skipped (one that
        closed meanwhile raises nothing), parked connections are not woken,
        and nothing waits for a slow client (see backpressure in
        ``docs/websockets.md``). As with ``ws.send``, a broadcast made after a
        storage write leaves once the write is committed (output gate); with
        nothing to wait for it returns without a checkpoint.

        Args:
            message: Text (``str``) or binary (``bytes``) message.
            tag: Only the sockets accepted with this tag.
            exclude: A socket, or several, to leave out (the sender, say).

        Returns:
            How many sockets it was sent to.

        Raises:
            TypeError: ``message`` is neither text nor bytes, ``tag`` is not
                a str, or ``exclude`` holds something else than WebSockets.
            ObjectResetError: a commit the broadcast waited for failed; the
                message was dropped.
        """
        message = check_message(message)
        if tag is not None and not isinstance(tag, str):
            raise TypeError(f"tag must be a str or None, got {type(tag).__name__}")
        excluded = _socket_set(exclude)
        record = self._record
        record.check_alive()
        await record.output_gate.wait()
        return self._services.sockets.broadcast(record.key, message, tag=tag, exclude=excluded)

    def set_websocket_auto_response(self, pair: WebSocketRequestResponsePair | None) -> None:
        """Answer ``pair.request`` with ``pair.response`` without waking the object.

        ``None`` clears it. The setting outlives hibernation.
        """
        self._services.sockets.set_auto_response(self._record, pair)

    def get_websocket_auto_response(self) -> WebSocketRequestResponsePair | None:
        """The auto-response pair in force, or ``None``."""
        return self._services.sockets.get_auto_response(self._record)

    def get_websocket_auto_response_timestamp(self, ws: WebSocket) -> float | None:
        """When ``ws`` last got an auto-response (epoch seconds), or ``None``."""
        return self._services.sockets.get_auto_response_timestamp(self._record, ws)

    def set_hibernatable_websocket_event_timeout(self, seconds: float | None) -> None:
        """Reset the whole object when a ``websocket_*`` handler runs longer than this.

        ``None`` (the default) means no limit.
        """
        self._services.sockets.set_event_timeout(self._record, seconds)

    def get_hibernatable_websocket_event_timeout(self) -> float | None:
        """The event timeout in seconds, or ``None``."""
        return self._services.sockets.get_event_timeout(self._record)

    # ---------------------------------------------------------------- other

    def now(self) -> float:
        """Now, in epoch seconds, by the runtime's clock.

        Use it rather than ``time.time()`` for alarm times: it follows Trio's
        clock, so under ``autojump_clock`` an alarm set for ``ctx.now() + 300``
        fires exactly 300 seconds of virtual time later.
        """
        return self._services.clock.now()

    @overload
    def namespace(self, name: str) -> Namespace[Any]: ...

    @overload
    def namespace(self, name: str, object_class: type[ObjectT]) -> Namespace[ObjectT]: ...

    def namespace(self, name: str, object_class: type[Any] | None = None) -> Namespace[Any]:
        """Another namespace of the same runtime, to call other objects.

        With ``object_class`` it is typed, as ``Runtime.namespace`` explains.
        """
        namespace = self._services.namespace(name)
        return namespace if object_class is None else typed_namespace(namespace, object_class)

    async def block_concurrency_while(self, async_fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``await async_fn(*args)`` while no other event may start.

        No other event starts and no handler resumes from runtime-mediated
        I/O (calls to other objects, storage) until it returns. A call chain
        that starts inside ``async_fn`` and comes back to this object is let
        in rather than deadlocked.

        If ``async_fn`` raises, the object is reset (as in Durable Objects)
        and the exception propagates to the caller with its type.
        Cancellation propagates without resetting the object.
        """
        record = self._record
        record.check_alive()
        await record.input_gate.acquire()
        try:
            return await async_fn(*args)
        except Exception as exc:
            record.reset(exc, origin="block_concurrency_while")
            raise
        finally:
            record.input_gate.release()

    def wait_until(self, async_fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``async_fn(*args)`` in the background, in the object's nursery.

        The object stays awake while the work runs, up to ``evict_after``
        seconds after its last event; eviction or reset cancels the work. If
        the work raises, the error is logged and the object is reset.
        """
        self._record.check_alive()
        self._record.spawn_background(async_fn, args)

    def abort(self, reason: str | None = None) -> None:
        """Reset the object at once.

        Handlers in flight are cancelled and their callers get
        :class:`~trio_durable.ObjectResetError`; background work is
        cancelled; every WebSocket of the object, hibernated ones too, is
        disconnected. The next event builds a fresh instance.
        """
        message = f"the object was aborted: {reason}" if reason else "the object was aborted"
        self._record.reset(ObjectResetError(message), origin="abort", abort=True)


def _socket_set(exclude: WebSocket | Iterable[WebSocket]) -> frozenset[WebSocket]:
    """``broadcast(exclude=...)`` as a set: one socket, or an iterable of them."""
    if isinstance(exclude, WebSocket):
        return frozenset((exclude,))
    if isinstance(exclude, str | bytes):
        raise TypeError("exclude takes a WebSocket or a list of them, not a str")
    try:
        sockets = frozenset(exclude)
    except TypeError:
        raise TypeError(
            f"exclude takes a WebSocket or a list of them, got {type(exclude).__name__}"
        ) from None
    for ws in sockets:
        if not isinstance(ws, WebSocket):
            raise TypeError(f"exclude takes WebSockets, got a {type(ws).__name__}")
    return sockets


@attrs.define(eq=False)
class DurableObject:
    """Base class for durable objects; subclass it as an attrs class.

    ::

        @attrs.define(eq=False)
        class Counter(td.DurableObject):
            hits: int = 0          # in-memory: back to 0 after hibernation

            async def increment(self) -> int:
                self.hits += 1
                return self.hits

    Any public ``async def`` is callable through a stub. The runtime calls
    these handlers itself when defined: ``fetch(request)``, ``alarm(info)``,
    ``websocket_message(ws, message)``, ``websocket_close(ws, code, reason,
    was_clean)`` and ``websocket_error(ws, error)``.

    Attributes:
        ctx: The object's :class:`ObjectContext`.
        env: The ``env`` value given to ``open_runtime`` (configuration,
            bindings), shared by all objects.
    """

    ctx: ObjectContext = attrs.field(kw_only=True, repr=False)
    env: Any = attrs.field(kw_only=True, default=None, repr=False)
