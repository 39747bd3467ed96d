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

import logging
import socket
from collections.abc import Callable, Collection, Iterator
from typing import Any

import attrs
import trio

from .._core._clock import WallClock
from .._core._gates import EVENT_COMMITS, PendingCommit, lost_writes
from .._core._live import LiveObject
from .._core._registry import Registry
from .._exceptions import LimitExceededError, StorageError
from .._http import Response
from .._ids import DurableObjectId
from .._limits import (
    MAX_ATTACHMENT_BYTES,
    MAX_TAG_BYTES,
    MAX_TAGS,
    MAX_WEBSOCKETS_PER_OBJECT,
    CloseCode,
    check_seconds,
)
from ._auto_response import WebSocketRequestResponsePair
from ._checks import check_tags
from ._fetch_watch import watch_fetch
from ._home import ConnectionHome
from ._network import NetworkTransport, client_frames
from ._parking import SocketParking
from ._socket import (
    WebSocket,
    abort_socket_connection,
    adopt_socket,
    auto_response_time,
    belongs_to,
    check_acceptable,
    drop_socket,
    hand_over_state,
    has_tag,
    join_group,
    moved_away,
    send_auto_response,
    send_to_each,
    settle_after_fetch,
    socket_tags,
    socket_transport,
)
from ._socket_home import bind_home, register_home

__all__ = [
    "LOST_WRITES_REASON",
    "STORAGE_ERROR_REASON",
    "ObjectSockets",
    "SocketHub",
    "SocketLimits",
]

logger = logging.getLogger("trio_durable.websocket")

#: The close reason (code 1011) of a socket whose message's writes a failed commit lost.
LOST_WRITES_REASON = "a storage commit failed: the message was not processed, try again"
#: The close reason (code 1011) of a socket whose handler raised a `StorageError`.
STORAGE_ERROR_REASON = "the object's storage failed: the message was not processed"


@attrs.frozen
class SocketLimits:
    """Limits on hibernatable sockets; set through ``open_runtime``."""

    max_tags: int = MAX_TAGS
    max_tag_bytes: int = MAX_TAG_BYTES
    max_sockets_per_object: int = MAX_WEBSOCKETS_PER_OBJECT
    max_attachment_bytes: int = MAX_ATTACHMENT_BYTES


@attrs.frozen
class MovedSocket:
    """A hibernatable socket on its way to another process (its descriptor travels apart)."""

    tags: tuple[str, ...]
    attachment: bytes | None
    auto_response_at: float | None
    url: str | None
    protocol: str | None
    unsent: bytes
    undelivered: list[str | bytes]


@attrs.frozen
class MovedObject:
    """The hibernatable sockets of one object, and its socket settings, on their way."""

    namespace: str
    hex_id: str
    name: str | None
    auto_response: tuple[str, str] | None
    event_timeout: float | None
    sockets: list[MovedSocket]


class ObjectSockets:
    """The hibernatable sockets of one object, with its socket settings."""

    __slots__ = (
        "auto_response",
        "event_timeout",
        "hub",
        "key",
        "object_class",
        "object_id",
        "sockets",
    )

    def __init__(self, hub: SocketHub, object_id: DurableObjectId, object_class: type) -> None:
        self.hub = hub
        self.object_id = object_id
        self.object_class = object_class
        self.key = (object_id.namespace, object_id.hex)
        # An ordered set: dict keys keep acceptance order.
        self.sockets: dict[WebSocket, None] = {}
        self.auto_response: WebSocketRequestResponsePair | None = None
        self.event_timeout: float | None = None

    def __len__(self) -> int:
        return len(self.sockets)

    @property
    def max_attachment_bytes(self) -> int:
        """The attachment limit of this runtime."""
        return self.hub.limits.max_attachment_bytes

    def __iter__(self) -> Iterator[WebSocket]:
        return iter(list(self.sockets))

    def remove(self, ws: WebSocket) -> None:
        """Forget a socket (it closed)."""
        self.sockets.pop(ws, None)
        self.hub._forget_if_empty(self)

    # ------------------------------------------------------------- delivery

    def note_sent(self) -> None:
        """Count one message sent on a socket of this group."""
        self.hub.messages_sent += 1

    async def deliver_message(self, ws: WebSocket, message: str | bytes) -> None:
        """Answer an auto-response, or dispatch ``websocket_message``."""
        self.hub.messages_received += 1
        pair = self.auto_response
        if pair is not None and isinstance(message, str) and message == pair.request:
            send_auto_response(ws, pair.response, self.hub.clock.now())
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
        if registry.closed:
            return
        cls = self.object_class
        if getattr(cls, handler_name, None) is None:
            if handler_name == "websocket_message":
                logger.warning(
                    "%s has no %s handler; a message for %s was dropped",
                    cls.__name__,
                    handler_name,
                    self.object_id,
                )
            return

        async def handler(instance: Any) -> None:
            await getattr(instance, handler_name)(*args)

        try:
            record = registry.activate(self.object_id, self.object_class)
        except trio.ClosedResourceError:
            return
        except Exception:
            logger.exception("could not activate %s for %s", self.object_id, handler_name)
            return
        timeout = self.event_timeout
        commits: list[PendingCommit] = []
        storage_failed = False
        watching = EVENT_COMMITS.set(commits)
        try:
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
                storage_failed = _is_storage_error(exc)
        finally:
            EVENT_COMMITS.reset(watching)
        ws: WebSocket = args[0]
        if commits and await lost_writes(commits):
            # A commit failed: the object was reset and the event's writes
            # (and the replies they held back) are gone. Its client must not
            # believe them done: close its socket so that it retries.
            logger.info("closing a WebSocket of %s with 1011: its writes were lost", self.object_id)
            await ws.close(CloseCode.INTERNAL_ERROR, LOST_WRITES_REASON)
        elif storage_failed:
            # The handler could not read or write (an unreadable stored
            # value, a database out of reach): the message was not handled,
            # and a client waiting for an answer would wait forever. The
            # object's other sockets are not concerned.
            logger.info("closing a WebSocket of %s with 1011: a storage error", self.object_id)
            await ws.close(CloseCode.INTERNAL_ERROR, STORAGE_ERROR_REASON)


def _is_storage_error(exc: BaseException) -> bool:
    """True for a `StorageError`, alone or in an exception group (a handler's nursery)."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(StorageError) is not None
    return isinstance(exc, StorageError)


class SocketHub:
    """Every hibernatable socket of one runtime, its connection nursery and parking."""

    def __init__(self, registry: Registry, limits: SocketLimits, clock: WallClock) -> None:
        self.registry = registry
        self.limits = limits
        self.clock = clock
        self.parking = SocketParking()
        self._groups: dict[tuple[str, str], ObjectSockets] = {}
        # Standard and outbound sockets of each activation: they pin it.
        self._pinned: dict[LiveObject, set[WebSocket]] = {}
        self._nursery: trio.Nursery | None = None
        #: Auto-responses sent without waking an object.
        self.auto_responses = 0
        #: Messages received on hibernatable sockets, and sent on them (by
        #: ``ws.send`` and broadcasts; auto-responses are counted apart).
        self.messages_received = 0
        self.messages_sent = 0
        #: The connection homes of the gateways serving this runtime (their
        #: open network connections, for statistics).
        self.connection_homes: list[ConnectionHome] = []
        registry.reset_listeners.append(self._on_reset)
        registry.close_listeners.append(self._on_object_closed)
        register_home(registry, self)

    @property
    def max_attachment_bytes(self) -> int:
        """The attachment limit of this runtime."""
        return self.limits.max_attachment_bytes

    @property
    def connection_nursery(self) -> trio.Nursery:
        """The long-lived nursery where network connections live."""
        if self._nursery is None:
            raise trio.ClosedResourceError("the runtime's connection nursery is not running")
        return self._nursery

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Host the connection nursery and the parking waiter until cancelled."""
        bind_home(self)
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
                    abort_socket_connection(ws)

    def watch_fetch(self) -> Callable[[Response | None], None]:
        """Settle the sockets a fetch accepts when it returns (a ``FetchWatcher``).

        Given to the dispatcher: a socket accepted by a fetch that raised, or
        whose response does not carry its client end, is dropped at once.
        """
        return watch_fetch(settle_after_fetch)

    def bind_to_current_task(self) -> None:
        """Make this hub the socket home of the calling task (see ``current_home``)."""
        bind_home(self)

    # --------------------------------------------------------------- groups

    def group_for(self, record: LiveObject) -> ObjectSockets:
        """The socket group of ``record``'s object, created on first use."""
        group = self._groups.get(record.key)
        if group is None:
            group = self._groups[record.key] = ObjectSockets(
                self, record.object_id, record.object_class
            )
        return group

    def _forget_if_empty(self, group: ObjectSockets) -> None:
        if not group.sockets and group.auto_response is None and group.event_timeout is None:
            self._groups.pop(group.key, None)

    def objects_with_sockets(self) -> list[tuple[str, str]]:
        """The ``(namespace, hex id)`` of every object that has hibernatable sockets."""
        return [key for key, group in self._groups.items() if group.sockets]

    async def export_object(
        self, key: tuple[str, str]
    ) -> tuple[MovedObject, list[socket.socket]] | None:
        """Take an object's hibernatable sockets out of this process, to move them.

        Each network connection stops at a message boundary and leaves with
        its unsent output and undelivered input; its handle here ends
        silently. A socket that cannot move (TLS, closing, in memory) is
        closed with 1012 (service restart) instead, so its client reconnects.
        Returns ``None`` when the object has no socket here.
        """
        group = self._groups.get(key)
        if group is None:
            return None
        moved: list[MovedSocket] = []
        socks: list[socket.socket] = []
        for ws in list(group.sockets):
            transport = socket_transport(ws)
            detached = await transport.detach() if isinstance(transport, NetworkTransport) else None
            if detached is None:
                if ws.ready_state < WebSocket.CLOSING:
                    await ws.close(CloseCode.SERVICE_RESTART, "service restart; reconnect")
                continue
            tags, attachment, auto_response_at = hand_over_state(ws)
            moved.append(
                MovedSocket(
                    tags,
                    attachment,
                    auto_response_at,
                    ws.url,
                    ws.protocol,
                    detached.unsent,
                    detached.undelivered,
                )
            )
            socks.append(detached.sock)
            moved_away(ws)
        pair = group.auto_response
        exported = MovedObject(
            group.object_id.namespace,
            group.object_id.hex,
            group.object_id.name,
            (pair.request, pair.response) if pair is not None else None,
            group.event_timeout,
            moved,
        )
        self._groups.pop(key, None)
        return exported, socks

    def import_object(
        self,
        moved: MovedObject,
        socks: list[socket.socket],
        object_class: type,
        home: ConnectionHome,
    ) -> list[Callable[[], None]]:
        """Adopt an object's sockets from another process; return how to start each one.

        The sockets join the object's group at once (``get_websockets()``
        lists them, sends to them go out); reading starts when the returned
        callables are called, once this process may run the object.
        """
        object_id = DurableObjectId(moved.namespace, moved.hex_id, moved.name)
        key = (moved.namespace, moved.hex_id)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = ObjectSockets(self, object_id, object_class)
        if moved.auto_response is not None:
            group.auto_response = WebSocketRequestResponsePair(*moved.auto_response)
        group.event_timeout = moved.event_timeout
        starts: list[Callable[[], None]] = []
        for state, sock in zip(moved.sockets, socks, strict=True):
            sock.setblocking(False)
            transport = NetworkTransport(sock, home)
            ws = adopt_socket(
                group,
                transport,
                tags=tuple(state.tags),
                attachment=state.attachment,
                auto_response_at=state.auto_response_at,
                url=state.url,
                protocol=state.protocol,
            )
            group.sockets[ws] = None
            initial = client_frames(list(state.undelivered))

            def start(
                transport: NetworkTransport = transport,
                ws: WebSocket = ws,
                initial: bytes = initial,
                unsent: bytes = state.unsent,
            ) -> None:
                transport.start(ws, initial=initial, preamble=unsent)

            starts.append(start)
        return starts

    def hibernatable_count(self) -> int:
        """Open hibernatable sockets across all objects."""
        return sum(len(group) for group in self._groups.values())

    def network_connections(self) -> tuple[int, int]:
        """``(open, parked)``: WebSocket connections the gateway serves, and those parked."""
        return sum(len(home) for home in self.connection_homes), len(self.parking)

    # ------------------------------------------------------------ broadcast

    def broadcast(
        self,
        key: tuple[str, str],
        message: str | bytes,
        *,
        tag: str | None = None,
        exclude: Collection[WebSocket] = (),
    ) -> int:
        """Send ``message`` to every open hibernatable socket of one object; never blocks.

        The object is not needed (a hibernated one stays hibernated) and no
        parked connection is woken: each frame is written straight to its
        socket, or to its send buffer. The message object is the same for
        every socket, so a network connection serializes it once
        (``serialize_message`` keeps the last frame it built). Sockets that
        are closing or closed, or close while it runs, are skipped.

        Args:
            key: The object's ``(namespace, hex id)``.
            message: ``str`` (text) or ``bytes`` (binary), already checked.
            tag: Only the sockets accepted with this tag.
            exclude: Sockets to skip.

        Returns:
            How many sockets it was sent to.
        """
        group = self._groups.get(key)
        if group is None:
            return 0
        # A copy: a send may close a socket, which leaves the group.
        sent = send_to_each(list(group.sockets), message, tag, exclude)
        self.messages_sent += sent
        return sent

    # ----------------------------------------------------- ctx operations

    def accept(self, record: LiveObject, ws: WebSocket, tags: Any) -> None:
        """``ctx.accept_websocket``: make ``ws`` a hibernatable socket of ``record``."""
        ws = check_acceptable(ws)
        limits = self.limits
        clean_tags = check_tags(tags, max_tags=limits.max_tags, max_tag_bytes=limits.max_tag_bytes)
        group = self.group_for(record)
        limit = self.limits.max_sockets_per_object
        if len(group.sockets) >= limit:
            raise LimitExceededError(
                f"object {record.object_id} already has {len(group.sockets):,} "
                f"hibernatable WebSockets; the limit is {limit:,}"
            )
        join_group(ws, group, clean_tags)
        group.sockets[ws] = None

    def get_websockets(self, record: LiveObject, tag: str | None) -> list[WebSocket]:
        """``ctx.get_websockets``: open hibernatable sockets, optionally by tag."""
        group = self._groups.get(record.key)
        if group is None:
            return []
        if tag is None:
            return [ws for ws in group.sockets if ws.ready_state < WebSocket.CLOSED]
        if not isinstance(tag, str):
            raise TypeError(f"tag must be a str, got {type(tag).__name__}")
        return [
            ws for ws in group.sockets if ws.ready_state < WebSocket.CLOSED and has_tag(ws, tag)
        ]

    def get_tags(self, record: LiveObject, ws: WebSocket) -> list[str]:
        """``ctx.get_tags``."""
        return list(socket_tags(self._check_own(record, ws)))

    def _check_own(self, record: LiveObject, ws: WebSocket) -> WebSocket:
        if not isinstance(ws, WebSocket):
            raise TypeError(f"expected a WebSocket, got {type(ws).__name__}")
        if not belongs_to(ws, record.key):
            raise ValueError("this WebSocket is not a hibernatable socket of this object")
        return ws

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
        return auto_response_time(self._check_own(record, ws))

    def set_event_timeout(self, record: LiveObject, seconds: float | None) -> None:
        """``ctx.set_hibernatable_websocket_event_timeout``."""
        if seconds is not None:
            seconds = check_seconds("the event timeout", seconds)
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
            drop_socket(ws, CloseCode.ABNORMAL, "the object was aborted")

    def _on_object_closed(self, record: LiveObject) -> None:
        # Standard and outbound sockets live and die with their instance.
        for ws in list(self._pinned.pop(record, ())):
            drop_socket(ws, CloseCode.GOING_AWAY, "the object was evicted")

    # ------------------------------------------------- standard sockets

    def pin(self, record: LiveObject, ws: WebSocket) -> None:
        """Keep ``record`` awake while ``ws`` (a standard or outbound socket) is open.

        Called by `pin_socket`, which also tells the handle, so that it
        unpins when it closes.
        """
        record.pin(socket=True)
        self._pinned.setdefault(record, set()).add(ws)

    def unpin(self, record: LiveObject, ws: WebSocket) -> None:
        """``ws`` closed: it no longer keeps ``record`` awake."""
        record.unpin(socket=True)
        pinned = self._pinned.get(record)
        if pinned is not None:
            pinned.discard(ws)
            if not pinned:
                del self._pinned[record]

    async def close_object_sockets(
        self,
        namespace: str,
        hex_id: str,
        code: int = CloseCode.GOING_AWAY,
        reason: str = "going away",
    ) -> None:
        """Close every hibernatable socket of one object (1001 going away by default)."""
        group = self._groups.get((namespace, hex_id))
        if group is None:
            return
        for ws in group:
            await ws.close(code, reason)
        await trio.lowlevel.checkpoint()
