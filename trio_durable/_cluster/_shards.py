"""What a worker does when it gains, loses or hands over shards.

:class:`LocalShards` is the :class:`~._member.ShardEvents` of a worker's
runtime: it resets the live objects of a shard this process lost (their
callers get ``ObjectResetError``, their next event runs at the new owner),
drops and loads alarms by shard, and, when a shard is to move to another
member, evicts its objects, waits until their writes are committed and
moves (or closes) their sockets before the lease is released.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Final

import trio

from .._alarms import AlarmScheduler
from .._core._registry import Registry
from .._exceptions import ObjectResetError
from .._ids import shard_of
from .._limits import CloseCode
from .._storage._engine import StorageEngine
from .._websocket._hub import SocketHub
from ._placement import Member

__all__ = ["LocalShards"]

logger: Final = logging.getLogger("trio_durable.cluster")

Spawn = Callable[[Callable[[], Awaitable[None]]], None]


class LocalShards:
    """The runtime's side of shard changes.

    Args:
        registry: This process's live objects.
        alarms: This process's alarm scheduler.
        sockets: This process's hibernatable sockets.
        engine: This process's write buffer.
        spawn: Starts a task in the runtime's nursery.
    """

    def __init__(
        self,
        registry: Registry,
        alarms: AlarmScheduler,
        sockets: SocketHub,
        engine: StorageEngine,
        spawn: Spawn,
    ) -> None:
        self._registry = registry
        self._alarms = alarms
        self._sockets = sockets
        self._engine = engine
        self._spawn = spawn

    def shards_lost(self, shards: Collection[int]) -> None:
        """Another process holds these shards now: nothing of theirs may run here."""
        for record in self._registry:
            if not record.is_closed and shard_of(record.object_id.hex) in shards:
                record.reset(
                    ObjectResetError("another process of the deployment runs this object now"),
                    origin="shard moved",
                )
        self._alarms.forget_shards(shards)
        keys = [key for key in self._sockets.objects_with_sockets() if shard_of(key[1]) in shards]
        if keys:
            self._spawn(lambda: self._close_sockets(keys))

    def shards_gained(self, shards: Collection[int]) -> None:
        """This process holds these shards now: their alarms fire here."""
        frozen = frozenset(shards)
        self._spawn(lambda: self._alarms.load(frozen))

    async def hand_over(self, shards: Collection[int], successor: Member | None) -> None:
        """Evict the objects of ``shards``, commit their writes, and close their sockets.

        The lease is released afterwards (by the member), and the successor
        activates the objects on their next event.
        """
        records = [
            record
            for record in self._registry
            if not record.is_closed and shard_of(record.object_id.hex) in shards
        ]
        async with trio.open_nursery() as nursery:
            for record in records:
                nursery.start_soon(self._registry.evict, record.object_id)
        await self._engine.settle([record.key for record in records])
        keys = [key for key in self._sockets.objects_with_sockets() if shard_of(key[1]) in shards]
        await self._close_sockets(keys)

    async def _close_sockets(self, keys: list[tuple[str, str]]) -> None:
        # Their clients reconnect, and reach the object where it runs now.
        for namespace, hex_id in keys:
            await self._sockets.close_object_sockets(
                namespace, hex_id, CloseCode.SERVICE_RESTART, "the object moved; reconnect"
            )
