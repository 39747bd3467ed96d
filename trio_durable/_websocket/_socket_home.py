"""What a WebSocket handle needs from its runtime, and how it finds it.

A :class:`~trio_durable.WebSocketPair` is made by user code, with no runtime
in sight. When one of its ends needs the runtime's help (a task in the
connection nursery, pinning its object while it is open, the attachment
limit), it asks :func:`current_home`: the socket hub of the object whose code
is running, or the hub bound to the current task by ``open_runtime``. The
hub registers itself with :func:`register_home` and :func:`bind_home`.

A hibernatable socket also belongs to a :class:`SocketGroup`: the sockets of
its object, kept by the hub, which turns what arrives on the socket into
events of the object.

Both are protocols generic in the handle's type, so that this module (below
the handle's) need not know the handle: the handle module uses
``SocketHome[WebSocket]`` and ``SocketGroup[WebSocket]``.
"""

from __future__ import annotations

import contextvars
import weakref
from typing import Any, Final, Protocol, TypeVar

import trio

from .._core._live import LiveObject, Supervisor, current_object
from .._limits import MAX_ATTACHMENT_BYTES

__all__ = [
    "SocketGroup",
    "SocketHome",
    "bind_home",
    "current_attachment_limit",
    "current_home",
    "register_home",
]

S_contra = TypeVar("S_contra", contravariant=True)


class SocketHome(Protocol[S_contra]):
    """What a socket handle needs from its runtime's socket hub."""

    @property
    def connection_nursery(self) -> trio.Nursery:
        """The long-lived nursery where connections run (never an object's)."""

    @property
    def max_attachment_bytes(self) -> int:
        """The attachment limit of the runtime."""

    def pin(self, record: LiveObject, ws: S_contra) -> None:
        """Keep ``record`` awake while ``ws`` (a standard or outbound socket) is open."""

    def unpin(self, record: LiveObject, ws: S_contra) -> None:
        """``ws`` closed: it no longer keeps ``record`` awake."""


class SocketGroup(Protocol[S_contra]):
    """The hibernatable sockets of one object, as a socket handle sees them."""

    @property
    def key(self) -> tuple[str, str]:
        """The object's ``(namespace, hex id)``."""

    @property
    def max_attachment_bytes(self) -> int:
        """The attachment limit of the runtime that owns the group."""

    def remove(self, ws: S_contra) -> None:
        """Forget a socket (it closed)."""

    async def deliver_message(self, ws: S_contra, message: str | bytes) -> None:
        """Answer an auto-response, or run ``websocket_message``."""

    async def deliver_close(self, ws: S_contra, code: int, reason: str, was_clean: bool) -> None:
        """Run ``websocket_close``."""

    async def deliver_error(self, ws: S_contra, error: BaseException) -> None:
        """Run ``websocket_error``."""

    def note_sent(self) -> None:
        """Count one message sent on a socket of the group (statistics)."""


_bound: Final[contextvars.ContextVar[SocketHome[Any] | None]] = contextvars.ContextVar(
    "trio_durable_socket_home", default=None
)
_by_registry: Final[weakref.WeakKeyDictionary[Supervisor, SocketHome[Any]]] = (
    weakref.WeakKeyDictionary()
)


def register_home(registry: Supervisor, home: SocketHome[Any]) -> None:
    """Make ``home`` the socket home of every object of ``registry``."""
    _by_registry[registry] = home


def bind_home(home: SocketHome[Any]) -> None:
    """Make ``home`` the socket home of the calling task (and the tasks it starts)."""
    _bound.set(home)


def current_home() -> SocketHome[Any]:
    """The socket home of the running object's runtime, or of the current task.

    Raises:
        RuntimeError: no runtime is running here.
    """
    record = current_object()
    if record is not None:
        home: SocketHome[Any] | None = _by_registry.get(record.registry)
        if home is not None:
            return home
    home = _bound.get()
    if home is None:
        raise RuntimeError(
            "this WebSocket operation needs a running trio_durable runtime "
            "(call it inside an object, or inside `async with open_runtime(...)`)"
        )
    return home


def current_attachment_limit() -> int:
    """The attachment limit of the runtime whose code runs here, or the default."""
    try:
        return current_home().max_attachment_bytes
    except RuntimeError:
        return MAX_ATTACHMENT_BYTES
