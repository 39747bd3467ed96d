"""What a worker does when it gains, loses or hands over shards.

:class:`LocalShards` is the :class:`~._member.ShardEvents` of a worker's
runtime: it resets the live objects of a shard this process lost (their
callers get ``ObjectResetError``, their next event runs at the new owner),
drops and loads alarms by shard, and moves a shard to another member
without anyone noticing:

1. *freeze*: the hibernatable sockets of the shard's objects stop reading at
   a message boundary (what was read and not delivered, and what was not
   sent, stays with each socket), while the objects still run here;
2. *hand over*: the objects are evicted once their handlers finish, their
   writes committed, and their sockets sent, descriptors and all, to the
   successor, which adopts them without reading yet;
3. the lease is released (by the member); the successor takes the shard
   and starts reading the adopted sockets: the messages that waited meanwhile
   arrive, in order.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Collection
from typing import Final

import trio

from .._alarms import AlarmScheduler
from .._core._registry import Registry
from .._exceptions import ObjectResetError, ObjectUnavailableError, StorageError
from .._ids import shard_of
from .._limits import CloseCode
from .._storage._engine import StorageEngine
from .._websocket._frames import serialize_close
from .._websocket._hub import MovedObject, SocketHub
from ._link import LinkClosedError
from ._placement import Member

__all__ = ["LocalShards"]

logger: Final = logging.getLogger("trio_durable.cluster")

#: Pauses between attempts to load alarms while the storage is out of reach.
_FIRST_RETRY: Final = 0.5
_MAX_RETRY: Final = 5.0

Spawn = Callable[[Callable[[], Awaitable[None]]], None]
#: Sends moved objects' sockets to a member: ``(member, [(object, sockets)])``.
SendSockets = Callable[[Member, list[tuple[MovedObject, list[socket.socket]]]], Awaitable[None]]


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
        #: Sends sockets to another member (set by the dispatcher, which owns the links).
        self.send_sockets: SendSockets | None = None
        #: Whether this process holds a shard now (set by the runtime, from its member).
        self.holds: Callable[[int], bool] = lambda shard: True
        #: Why the member's last lease rounds failed, when the storage was out of
        #: reach (set by the runtime, from its member's ``storage_unreachable``).
        self.storage_unreachable: Callable[[], StorageError | None] = lambda: None
        # Sockets taken out of the hub, waiting to be sent, by shard.
        self._frozen: dict[int, list[tuple[MovedObject, list[socket.socket]]]] = {}
        # Adopted sockets waiting for their shard to be ours, by shard.
        self._adopted: dict[int, list[Callable[[], None]]] = {}

    def shards_lost(self, shards: Collection[int]) -> None:
        """This process lost these shards (at the epochs it held): nothing of theirs may run here.

        The objects' callers get :class:`~trio_durable.ObjectResetError`.
        When the lease lapsed because the storage was out of reach, its cause
        is that :class:`~trio_durable.StorageError` (the gateway answers 503);
        otherwise an :class:`~trio_durable.ObjectUnavailableError` saying the
        shard moved.
        """
        unreachable = self.storage_unreachable()
        for record in self._registry:
            if not record.is_closed and shard_of(record.object_id.hex) in shards:
                record.reset(
                    self._lost_error(shard_of(record.object_id.hex), unreachable),
                    origin="shard moved",
                )
        self._alarms.forget_shards(shards)
        keys = [key for key in self._sockets.objects_with_sockets() if shard_of(key[1]) in shards]
        if keys:
            self._spawn(lambda: self._close_sockets(keys))

    def _lost_error(self, shard: int, unreachable: StorageError | None) -> ObjectResetError:
        """What the callers of an object of a lost shard get, saying truthfully why."""
        if unreachable is not None:
            error = ObjectResetError(
                "this process's lease on the object's shard lapsed while the storage was "
                "out of reach; the object starts again where the shard is held now"
            )
            error.__cause__ = unreachable
            return error
        if self.holds(shard):
            # Taken again at a new epoch: our renewals came too late (a pause, say).
            error = ObjectResetError(
                "this process's lease on the object's shard lapsed before it was renewed; "
                "the object starts again"
            )
        else:
            error = ObjectResetError("another process of the deployment runs this object now")
        # Not the object's fault: where it runs now, a new call reaches it.
        error.__cause__ = ObjectUnavailableError("the object's shard moved; call it again")
        return error

    def shards_gained(self, shards: Collection[int]) -> None:
        """This process holds these shards now: their alarms fire here, adopted sockets read."""
        frozen = frozenset(shards)
        self._spawn(lambda: self._load_alarms(frozen))
        for shard in shards:
            for start in self._adopted.pop(shard, ()):
                start()

    async def _load_alarms(self, shards: frozenset[int]) -> None:
        """Load the shards' alarms, again and again while the storage is out of reach."""
        pause = _FIRST_RETRY
        while True:
            try:
                await self._alarms.load(shards)
                return
            except StorageError as exc:
                logger.warning(
                    "loading the alarms of %d shard(s) failed; retrying: %s", len(shards), exc
                )
            await trio.sleep(pause)
            pause = min(pause * 2, _MAX_RETRY)
            shards = frozenset(shard for shard in shards if self.holds(shard))
            if not shards:
                return

    def adopted(self, shard: int, starts: list[Callable[[], None]], held: bool) -> None:
        """Sockets of ``shard`` arrived from another member: read now if it is ours, else later."""
        if held:
            for start in starts:
                start()
        else:
            self._adopted.setdefault(shard, []).extend(starts)

    async def freeze(self, shards: Collection[int]) -> None:
        """Take the sockets of the shards' objects out of the hub, stopped at a message boundary."""
        for key in self._sockets.objects_with_sockets():
            shard = shard_of(key[1])
            if shard in shards:
                exported = await self._sockets.export_object(key)
                if exported is not None:
                    self._frozen.setdefault(shard, []).append(exported)

    async def hand_over(self, shards: Collection[int], successor: Member | None) -> None:
        """Evict the shards' objects, commit their writes, send their sockets to ``successor``.

        The member releases the lease afterwards.
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
        moving = [item for shard in shards for item in self._frozen.pop(shard, ())]
        if not moving:
            return
        try:
            if successor is None or self.send_sockets is None:
                raise LinkClosedError("no member to hand the sockets to")
            await self.send_sockets(successor, moving)
        except LinkClosedError as exc:
            # Their clients reconnect, and reach the objects where they run now.
            logger.warning("closing the sockets of %d object(s) with 1012 (%s)", len(moving), exc)
            for _moved, socks in moving:
                _close_with_restart(socks)
        except Exception:
            logger.exception("could not hand %d object(s)' sockets over; closing them", len(moving))
            for _moved, socks in moving:
                _close_with_restart(socks)
        else:
            for _moved, socks in moving:
                for sock in socks:
                    sock.close()  # the successor has its own descriptors now

    async def _close_sockets(self, keys: list[tuple[str, str]]) -> None:
        # Their clients reconnect, and reach the object where it runs now.
        for namespace, hex_id in keys:
            await self._sockets.close_object_sockets(
                namespace, hex_id, CloseCode.SERVICE_RESTART, "the object moved; reconnect"
            )


def _close_with_restart(socks: list[socket.socket]) -> None:
    """Tell each client to come back (1012), then close: its socket could not move."""
    frame = serialize_close(CloseCode.SERVICE_RESTART, "service restart; reconnect")
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.send(frame)
        sock.close()
