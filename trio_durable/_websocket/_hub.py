"""The socket hub: hibernatable sockets of every object, owned by the runtime.

Sockets outlive object instances, so they cannot belong to them. Each
runtime has one :class:`SocketHub`; for each object that accepted
hibernatable sockets it keeps an :class:`ObjectSockets` group (the sockets
with their tags and attachments, the auto-response pair, the event timeout).
The hub also owns the long-lived **connection nursery** (readers and writers
of network connections run there, never in an object's nursery) and the
shared :class:`~trio_durable._websocket._parking.SocketParking` waiter.

Delivering an event to a hibernated object activates it first (the
constructor runs again), then runs the handler as an event of the object.
Auto-responses and protocol pings never get that far, so they never wake an
object.
"""

from __future__ import annotations

import contextvars
import logging
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .._convert import Converter
from .._exceptions import LimitExceededError
from .._ids import DurableObjectId, Namespace
from .._registry import LiveObject, current_object
from ._parking import SocketParking
from ._socket import WebSocket, WebSocketRequestResponsePair, _Mode

if TYPE_CHECKING:
    from .._object import DurableObject
    from .._registry import Registry

__all__ = ["ObjectSockets", "SocketHub", "SocketLimits", "current_hub"]

logger = logging.getLogger("trio_durable.websocket")

_current_hub: contextvars.ContextVar[SocketHub | None] = contextvars.ContextVar(
    "trio_durable_socket_hub", default=None
)


def current_hub() -> SocketHub:
    """The hub of the runtime whose code is running (object or runtime task)."""
    record = current_object()
    if record is not None:
        hub: SocketHub = record.registry.runtime.sockets
        return hub
    found = _current_hub.get()
    if found is None:
        raise RuntimeError(
            "this WebSocket operation needs a running trio_durable runtime "
            "(call it inside an object, or inside `async with open_runtime(...)`)"
        )
    return found


@attrs.frozen
class SocketLimits:
    """Limits on hibernatable sockets (SPEC §7); set through ``open_runtime``."""

    max_tags: int = 10
    max_tag_bytes: int = 256
    max_sockets_per_object: int = 32_768
    max_attachment_bytes: int = 16_384


class ObjectSockets:
    """The hibernatable sockets of one object, with its socket settings."""

    __slots__ = (
        "auto_response",
        "event_timeout",
        "hub",
        "key",
        "namespace",
        "object_id",
        "sockets",
    )

    def __init__(self, hub: SocketHub, namespace: Namespace, object_id: DurableObjectId) -> None:
        self.hub = hub
        self.namespace = namespace
        self.object_id = object_id
        self.key = (namespace.name, object_id.hex)
        # An ordered set: dict keys keep acceptance order.
        self.sockets: dict[WebSocket, None] = {}
        self.auto_response: WebSocketRequestResponsePair | None = None
        self.event_timeout: float | None = None

    def __len__(self) -> int:
        return len(self.sockets)

    def __iter__(self) -> Iterator[WebSocket]:
        return iter(list(self.sockets))

    def remove(self, ws: WebSocket) -> None:
        """Forget a socket (it closed)."""
        self.sockets.pop(ws, None)
        self.hub._forget_if_empty(self)

    # ------------------------------------------------------------- delivery

    async def deliver_message(self, ws: WebSocket, message: str | bytes) -> None:
        """Answer an auto-response, or dispatch ``websocket_message``."""
        pair = self.auto_response
        if pair is not None and isinstance(message, str) and message == pair.request:
            ws._auto_response_at = self.hub.registry.runtime.wall_time()
            if ws._transport is not None and ws._transport.is_open:
                ws._transport.send_message(pair.response)
            self.hub.auto_responses += 1
            return
        await self._dispatch("websocket_message", ws, message)

    async def deliver_close(self, ws: WebSocket, code: int, reason: str, was_clean: bool) -> None:
        """Dispatch ``websocket_close``."""
        await self._dispatch("websocket_close", ws, code, reason, was_clean)

    async def deliver_error(self, ws: WebSocket, error: BaseException) -> None:
        """Dispatch ``websocket_error``."""
        await self._dispatch("websocket_error", ws, error)

    async def _dispatch(self, handler_name: str, *args: Any) -> None:
        registry = self.hub.registry
        if registry._closed:
            return
        cls = self.namespace.object_class
        if getattr(cls, handler_name, None) is None:
            if handler_name == "websocket_message":
                logger.warning(
                    "%s has no %s handler; a message for %s was dropped",
                    cls.__name__,
                    handler_name,
                    self.object_id,
                )
            return

        async def handler(instance: DurableObject) -> None:
            await getattr(instance, handler_name)(*args)

        try:
            record = registry.activate(self.namespace, self.object_id)
        except trio.ClosedResourceError:
            return
        except Exception:
            logger.exception("could not activate %s for %s", self.object_id, handler_name)
            return
        timeout = self.event_timeout
        try:
            if timeout is None:
                await record.run_event(handler)
            else:
                with trio.CancelScope(deadline=trio.current_time() + timeout) as scope:
                    await record.run_event(handler)
                if scope.cancelled_caught:
                    record.reset(
                        TimeoutError(
                            f"{handler_name} ran longer than the event timeout of {timeout} s"
                        ),
                        origin=f"{handler_name} timeout",
                    )
        except (trio.ClosedResourceError, Exception) as exc:
            # The object lives on (as after a failed fetch); the socket too.
            logger.warning(
                "%s.%s of %s raised %r",
                cls.__name__,
                handler_name,
                self.object_id,
                exc,
                exc_info=not isinstance(exc, trio.ClosedResourceError),
            )


class SocketHub:
    """Every hibernatable socket of one runtime, its connection nursery and parking."""

    def __init__(self, registry: Registry, converter: Converter, limits: SocketLimits) -> None:
        self.registry = registry
        self.converter = converter
        self.limits = limits
        self.parking = SocketParking()
        self._groups: dict[tuple[str, str], ObjectSockets] = {}
        self._nursery: trio.Nursery | None = None
        #: Auto-responses sent without waking an object.
        self.auto_responses = 0
        registry.reset_listeners.append(self._on_reset)
        registry.close_listeners.append(self._on_object_closed)
        registry.socket_closers.append(self.close_object_sockets)

    @property
    def connection_nursery(self) -> trio.Nursery:
        """The long-lived nursery where network connections live."""
        if self._nursery is None:
            raise trio.ClosedResourceError("the runtime's connection nursery is not running")
        return self._nursery

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Host the connection nursery and the parking waiter until cancelled."""
        _current_hub.set(self)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.parking.run)
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            for group in list(self._groups.values()):
                for ws in group:
                    if ws._transport is not None:
                        ws._transport.abort()

    def bind_to_current_task(self) -> None:
        """Make :func:`current_hub` find this hub in the calling task."""
        _current_hub.set(self)

    # --------------------------------------------------------------- groups

    def group_for(self, record: LiveObject) -> ObjectSockets:
        """The socket group of ``record``'s object, created on first use."""
        group = self._groups.get(record.key)
        if group is None:
            group = self._groups[record.key] = ObjectSockets(
                self, record.namespace, record.object_id
            )
        return group

    def existing_group(self, key: tuple[str, str]) -> ObjectSockets | None:
        """The socket group of an object, if it has one."""
        return self._groups.get(key)

    def _forget_if_empty(self, group: ObjectSockets) -> None:
        if not group.sockets and group.auto_response is None and group.event_timeout is None:
            self._groups.pop(group.key, None)

    def hibernatable_count(self) -> int:
        """Open hibernatable sockets across all objects."""
        return sum(len(group) for group in self._groups.values())

    # ----------------------------------------------------- ctx operations

    def accept(self, record: LiveObject, ws: WebSocket, tags: Any) -> None:
        """``ctx.accept_websocket``: make ``ws`` a hibernatable socket of ``record``."""
        if not isinstance(ws, WebSocket) or ws._is_client:
            raise TypeError(
                f"accept_websocket() takes the server end of a WebSocketPair, got {ws!r}"
            )
        if ws._mode is not _Mode.UNUSED:
            raise RuntimeError(f"this WebSocket was already accepted ({ws._mode.value})")
        if ws._state >= WebSocket.CLOSED:
            raise trio.ClosedResourceError("this WebSocket is already closed")
        clean_tags = self._check_tags(tags)
        group = self.group_for(record)
        limit = self.limits.max_sockets_per_object
        if len(group.sockets) >= limit:
            raise LimitExceededError(
                f"object {record.object_id} already has {len(group.sockets):,} "
                f"hibernatable WebSockets; the limit is {limit:,}"
            )
        ws._mode = _Mode.HIBERNATABLE
        ws._group = group
        ws._tags = clean_tags
        group.sockets[ws] = None

    def _check_tags(self, tags: Any) -> tuple[str, ...]:
        if isinstance(tags, str):
            raise TypeError("tags must be a list of str, not a single str")
        try:
            items = list(tags)
        except TypeError:
            raise TypeError(f"tags must be a list of str, got {type(tags).__name__}") from None
        unique: dict[str, None] = {}
        for tag in items:
            if not isinstance(tag, str):
                raise TypeError(f"each tag must be a str, got {type(tag).__name__}")
            size = len(tag.encode("utf-8"))
            if size > self.limits.max_tag_bytes:
                raise LimitExceededError(
                    f"tag {tag[:20]!r}… is {size:,} bytes; the limit is "
                    f"{self.limits.max_tag_bytes:,}"
                )
            if not tag:
                raise ValueError("a tag must not be empty")
            unique[tag] = None
        if len(unique) > self.limits.max_tags:
            raise LimitExceededError(
                f"{len(unique)} tags given; the limit is {self.limits.max_tags} per WebSocket"
            )
        return tuple(unique)

    def get_websockets(self, record: LiveObject, tag: str | None) -> list[WebSocket]:
        """``ctx.get_websockets``: open hibernatable sockets, optionally by tag."""
        group = self._groups.get(record.key)
        if group is None:
            return []
        if tag is None:
            return [ws for ws in group.sockets if ws._state < WebSocket.CLOSED]
        if not isinstance(tag, str):
            raise TypeError(f"tag must be a str, got {type(tag).__name__}")
        return [ws for ws in group.sockets if tag in ws._tags and ws._state < WebSocket.CLOSED]

    def get_tags(self, record: LiveObject, ws: WebSocket) -> list[str]:
        """``ctx.get_tags``."""
        self._check_own(record, ws)
        return list(ws._tags)

    def _check_own(self, record: LiveObject, ws: WebSocket) -> None:
        if not isinstance(ws, WebSocket):
            raise TypeError(f"expected a WebSocket, got {type(ws).__name__}")
        if ws._group is None or ws._group.key != record.key:
            raise ValueError("this WebSocket is not a hibernatable socket of this object")

    def set_auto_response(
        self, record: LiveObject, pair: WebSocketRequestResponsePair | None
    ) -> None:
        """``ctx.set_websocket_auto_response``."""
        if pair is not None and not isinstance(pair, WebSocketRequestResponsePair):
            raise TypeError(
                "set_websocket_auto_response() takes a WebSocketRequestResponsePair or None, "
                f"got {type(pair).__name__}"
            )
        group = self.group_for(record)
        group.auto_response = pair
        self._forget_if_empty(group)

    def get_auto_response(self, record: LiveObject) -> WebSocketRequestResponsePair | None:
        """``ctx.get_websocket_auto_response``."""
        group = self._groups.get(record.key)
        return group.auto_response if group is not None else None

    def get_auto_response_timestamp(self, record: LiveObject, ws: WebSocket) -> float | None:
        """``ctx.get_websocket_auto_response_timestamp`` (epoch seconds or None)."""
        self._check_own(record, ws)
        return ws._auto_response_at

    def set_event_timeout(self, record: LiveObject, seconds: float | None) -> None:
        """``ctx.set_hibernatable_websocket_event_timeout``."""
        if seconds is not None:
            if not isinstance(seconds, int | float) or isinstance(seconds, bool):
                raise TypeError(f"the event timeout is a number of seconds, got {seconds!r}")
            if not (seconds > 0 and math.isfinite(seconds)):
                raise ValueError(f"the event timeout must be positive and finite, got {seconds!r}")
            seconds = float(seconds)
        group = self.group_for(record)
        group.event_timeout = seconds
        self._forget_if_empty(group)

    def get_event_timeout(self, record: LiveObject) -> float | None:
        """``ctx.get_hibernatable_websocket_event_timeout``."""
        group = self._groups.get(record.key)
        return group.event_timeout if group is not None else None

    # -------------------------------------------------- lifecycle hooks

    def _on_reset(self, record: LiveObject, abort: bool) -> None:
        # abort() disconnects every socket of the object, hibernated ones too,
        # without telling the object (it is being reset).
        if not abort:
            return
        group = self._groups.get(record.key)
        if group is None:
            return
        for ws in group:
            transport = ws._transport
            ws._finish(1006, "the object was aborted", was_clean=False)
            if transport is not None:
                transport.abort()

    def _on_object_closed(self, record: LiveObject) -> None:
        # Standard and outbound sockets live and die with their instance.
        for ws in list(record.services.pop("pinned_sockets", ())):
            transport = ws._transport
            ws._finish(1001, "the object was evicted", was_clean=False)
            if transport is not None:
                transport.abort()

    async def close_object_sockets(self, namespace: str, hex_id: str) -> None:
        """Close every hibernatable socket of one object (1001 going away)."""
        group = self._groups.get((namespace, hex_id))
        if group is None:
            return
        for ws in group:
            await ws.close(1001, "going away")
        await trio.lowlevel.checkpoint()
