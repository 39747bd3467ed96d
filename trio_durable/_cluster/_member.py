"""One worker process's membership of a deployment: its leases, its links.

A :class:`ClusterMember` keeps the shard leases of its process (a round
every quarter of the lease time, see ``_leases.py``), knows which member
owns every other shard and where it listens, and keeps the links to them:
a Unix socket to the members of its own node (descriptors can travel on
it), TCP to the members of other nodes.
What the shards *mean* (objects to reset, alarms to load, sockets to hand
over) is the runtime's business: the member calls the :class:`ShardEvents`
it is given when its holdings change.

A lease counts as held locally until a margin before the store would let
another member take it, measured on this process's monotonic clock from
*before* the round that granted it. A process that was paused past that
point refuses events for the shard (``admit``) until its next round tells
it what it still holds; its commits are fenced by epoch in any case.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from pathlib import Path
from typing import Any, Final, Protocol

import attrs
import trio

from .._core._live import LiveObject
from .._exceptions import StorageError, TrioDurableError
from .._ids import SHARD_COUNT, shard_of
from .._limits import seconds_option
from ._leases import Fence, LeaseState, LeaseStore
from ._link import (
    CALLS,
    PROXY,
    Connection,
    LinkClosedError,
    Peer,
    Purpose,
    RequestHandler,
    handshake_client,
    handshake_server,
)
from ._placement import Member, desired_owners

__all__ = ["ClusterMember", "ClusterSpec", "ProxyHandler", "ShardEvents", "ShardNotHeldError"]

logger: Final = logging.getLogger("trio_durable.cluster")

#: Leases count as held locally until this share of the lease time has passed.
_LOCAL_SHARE: Final = 0.8
#: Seconds a link may take to connect and prove itself.
_CONNECT_TIMEOUT: Final = 5.0
#: Links accepted and not yet proved, at most (more are closed at once): what
#: strangers that connect and say nothing can hold (a few KiB each).
MAX_PENDING_HANDSHAKES: Final = 64

#: Serves a proxied connection another node opened: ``(member id, connection)``.
#: It owns the connection (it must close it).
ProxyHandler = Callable[[str, Connection], Awaitable[None]]


class ShardNotHeldError(TrioDurableError):
    """This process does not hold the object's shard (any more): route the event elsewhere."""



@attrs.frozen
class ClusterSpec:
    """How one worker process takes part in a deployment.

    Attributes:
        slot: The worker's place on its node (0 to N-1), stable across its restarts.
        run_dir: A private directory (mode 0700) for the links' sockets.
        lease_seconds: How long a lease lasts without renewal: the longest a
            dead or paused member keeps others from its shards when its
            supervisor cannot revoke them.
        call_timeout: The longest a call waits for some process to run its
            object (the owner died and no other took over yet) before
            :class:`~trio_durable.ObjectUnavailableError`.
        node: The node this process is part of: one server of the
            deployment (its supervisor and workers, on one machine). Shards
            are placed on ``(node, slot)``, so a node that restarts under
            the same name gets its shards back. ``""`` for a deployment of
            one node.
        link_host: The address this process listens on for links from other
            nodes (TCP, on a free port; it must be an address they reach).
            ``None``: no TCP link, for a deployment of one node.
    """

    slot: int = attrs.field(validator=attrs.validators.ge(0))
    run_dir: str
    lease_seconds: float = attrs.field(default=4.0, validator=seconds_option)
    call_timeout: float = attrs.field(default=10.0, validator=seconds_option)
    node: str = attrs.field(default="", validator=attrs.validators.instance_of(str))
    link_host: str | None = None


class ShardEvents(Protocol):
    """What the runtime does when the member's holdings change."""

    def shards_lost(self, shards: Collection[int]) -> None:
        """Shards this process no longer holds: reset their objects, drop their alarms."""

    def shards_gained(self, shards: Collection[int]) -> None:
        """Shards this process now holds: load their alarms."""

    async def freeze(self, shards: Collection[int]) -> None:
        """Stop reading the sockets of ``shards``' objects (before events for them are refused)."""

    async def hand_over(self, shards: Collection[int], successor: Member | None) -> None:
        """Give the objects of ``shards`` to ``successor``: evict them, move their sockets."""


class ClusterMember:
    """This process in the deployment: leases, the map of owners, links.

    Args:
        spec: Slot, run directory and timings.
        store: Where leases live.
        link_key: Proves membership on links (``_link.link_key(secret)``).
        events: Told when the holdings change.
    """

    def __init__(
        self, spec: ClusterSpec, store: LeaseStore, link_key: bytes, events: ShardEvents
    ) -> None:
        self.spec = spec
        self._store = store
        self._key = link_key
        self._events = events
        local_id = f"w{spec.slot}-{os.getpid()}-{secrets.token_hex(3)}"
        member_id = f"{spec.node}/{local_id}" if spec.node else local_id
        address = str(Path(spec.run_dir) / f"{local_id}.sock")
        self.member = Member(member_id, spec.slot, address, started=time.time(), node=spec.node)
        #: Shard → (epoch, local deadline on time.monotonic()).
        self._held: dict[int, tuple[int, float]] = {}
        self._owners: tuple[str | None, ...] = (None,) * SHARD_COUNT
        self._members: Mapping[str, Member] = {}
        self._handing_over: set[int] = set()
        self._freezing: set[int] = set()
        self._peers: dict[str, Peer] = {}
        # Links other members opened to this one.
        self._incoming: set[Peer] = set()
        self._listeners: list[trio.socket.SocketType] = []
        self._handshaking = 0
        # Set by close_links(): no link is opened or accepted any more.
        self._links_closing = False
        self._connecting: dict[str, trio.Event] = {}
        self._handlers: dict[str, RequestHandler] = {"round": self._serve_round}
        self._proxy_handler: ProxyHandler | None = None
        self._round_requested = trio.Event()
        self._round_done = trio.Event()
        # Rounds begun, and the number of the last one completed (see fresh_round).
        self._rounds_begun = 0
        self._round_completed = 0
        self._nursery: trio.Nursery | None = None
        self._leaving = False
        #: Rounds completed (for tests and statistics).
        self.rounds = 0
        #: Why the last lease round failed (``None`` once one succeeds again).
        self.round_error: Exception | None = None

    def __repr__(self) -> str:
        return f"<ClusterMember {self.member.member_id} holding {len(self._held)} shards>"

    # --------------------------------------------------------------- queries

    def holds(self, shard: int) -> bool:
        """True while this process may run objects of ``shard``."""
        held = self._held.get(shard)
        return held is not None and time.monotonic() < held[1] and shard not in self._handing_over

    def held_shards(self) -> frozenset[int]:
        """Every shard this process holds now."""
        return frozenset(shard for shard in self._held if self.holds(shard))

    def fence(self) -> Fence:
        """The epochs this process's commits prove (checked by the backend).

        Only shards whose lease has not lapsed by this process's clock: a
        process paused past its lease does not even try to commit for them.
        Shards being handed over are included: their objects' last writes
        are committed before the shards are released.
        """
        now = time.monotonic()
        epochs = {shard: epoch for shard, (epoch, until) in self._held.items() if now < until}
        return Fence(self.member.member_id, epochs)

    def owner_of(self, shard: int) -> Member | None:
        """The member the last round saw holding ``shard`` (``None``: nobody)."""
        owner = self._owners[shard]
        return None if owner is None else self._members.get(owner)

    def admit(self, record: LiveObject) -> None:
        """Refuse an event for an object whose shard this process does not hold.

        Raises:
            ShardNotHeldError: the shard is elsewhere (or its lease lapsed here).
        """
        if not self.holds(shard_of(record.object_id.hex)):
            raise ShardNotHeldError(f"{record.object_id!r} is not held by this process any more")

    def on(self, op: str, handler: RequestHandler) -> None:
        """Serve requests ``op`` that other members send on their links."""
        self._handlers[op] = handler

    def on_proxy(self, handler: ProxyHandler) -> None:
        """Serve the proxied connections members of other nodes open."""
        self._proxy_handler = handler

    def storage_unreachable(self) -> StorageError | None:
        """The error of the last lease round when it could not reach the storage."""
        error = self.round_error
        return error if isinstance(error, StorageError) else None

    # --------------------------------------------------------------- running

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen for links and keep the leases until cancelled; then leave cleanly."""
        await self._store.setup()
        # The run directory is private: only our user reaches the sockets in it.
        await trio.Path(self.spec.run_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
        listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.member.address)
        await listener.bind(self.member.address)
        os.chmod(self.member.address, 0o600)
        listener.listen(128)
        listeners = self._listeners = [listener]
        try:
            if self.spec.link_host is not None:
                tcp = await self._listen_tcp(self.spec.link_host)
                listeners.append(tcp)
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for each in listeners:
                    nursery.start_soon(self._accept, each)
                await self._round()
                nursery.start_soon(self._keep_leases)
                task_status.started()
                await trio.sleep_forever()
        finally:
            for each in listeners:
                each.close()
            with contextlib.suppress(OSError):
                os.unlink(self.member.address)
            self._nursery = None
            for peer in [*self._peers.values(), *self._incoming]:
                peer.connection.close()
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                try:
                    await self._store.leave(self.member.member_id)
                except Exception:
                    logger.exception("could not release the leases of %s", self.member.member_id)

    async def _listen_tcp(self, host: str) -> trio.socket.SocketType:
        """Listen for other nodes' links on a free port of ``host``; say where in :attr:`member`."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = trio.socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            await listener.bind((host, 0))
            listener.listen(128)
        except BaseException:
            listener.close()
            raise
        port = listener.getsockname()[1]
        link = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
        self.member = attrs.evolve(self.member, link=link)
        return listener

    def spawn(self, async_fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run ``async_fn(*args)`` in this member's nursery (it ends when the member stops).

        Raises:
            LinkClosedError: the member is not running.
        """
        if self._nursery is None:
            raise LinkClosedError("this member is not running")
        self._nursery.start_soon(async_fn, *args)

    def request_round(self) -> None:
        """Run a lease round now rather than at the next interval."""
        self._round_requested.set()

    async def wait_for_round(self) -> None:
        """Wait until the next lease round has completed."""
        self.request_round()
        await self._round_done.wait()

    async def fresh_round(self) -> None:
        """Wait for a lease round that begins after this call (it sees the table as it is now)."""
        wanted = self._rounds_begun + 1
        while self._round_completed < wanted:
            await self.wait_for_round()

    async def drain(self) -> None:
        """Hand every shard over to the members that should own them; return once none is held.

        For a rolling restart: the successor of this worker's slot runs
        already, so it is the one that should own them all. Each successor
        has taken its shards (and reads the sockets it adopted) by the time
        this returns, unless it could not be asked to.
        """
        while self._held:
            await self.wait_for_round()

    async def close_links(self) -> None:
        """Stop linking, and close every link once the calls already sent on it are answered.

        A process going away calls it while it can still serve: the other
        members' calls sent before they learn it is closing are answered
        (``"moved"`` for an object no longer here, so they ask its new
        owner); later calls never leave them (nothing ran: they retry
        elsewhere). If cancelled (bound it with ``trio.move_on_after``), the
        links still open are cut.
        """
        self._links_closing = True
        for listener in self._listeners:
            listener.close()
        async with trio.open_nursery() as nursery:
            for peer in [*self._peers.values(), *self._incoming]:
                nursery.start_soon(peer.finish)

    async def _keep_leases(self) -> None:
        interval = self.spec.lease_seconds / 4
        while True:
            with trio.move_on_after(interval):
                await self._round_requested.wait()
            self._round_requested = trio.Event()
            try:
                await self._round()
            except Exception as exc:
                if self.round_error is None:
                    logger.exception("a lease round of %s failed; retrying", self.member.member_id)
                self.round_error = exc
            else:
                if self.round_error is not None:
                    logger.warning("lease rounds of %s succeed again", self.member.member_id)
                self.round_error = None

    async def _round(self) -> None:
        started = time.monotonic()
        self._rounds_begun += 1
        number = self._rounds_begun
        state = await self._store.round(self.member, self.spec.lease_seconds)
        self._apply(state, started + self.spec.lease_seconds * _LOCAL_SHARE)
        self.rounds += 1
        self._round_completed = number
        done, self._round_done = self._round_done, trio.Event()
        done.set()

    def _apply(self, state: LeaseState, deadline: float) -> None:
        before = self._held
        after = {shard: (epoch, deadline) for shard, epoch in state.held.items()}
        # A shard held at another epoch was lost and taken again in between.
        lost = {s for s, (epoch, _) in before.items() if s not in after or after[s][0] != epoch}
        gained = {s for s, (epoch, _) in after.items() if s not in before or s in lost}
        self._held = after
        self._owners = state.owners
        self._members = state.members
        for member_id in list(self._peers):
            if member_id not in state.members:
                self._peers.pop(member_id).connection.close()
        if lost:
            logger.warning("%s lost %d shard(s)", self.member.member_id, len(lost))
            self._handing_over -= lost
            self._events.shards_lost(lost)
        if gained:
            logger.info("%s took %d shard(s)", self.member.member_id, len(gained))
            self._events.shards_gained(gained)
        to_hand = set(state.hand_over) - self._handing_over - self._freezing
        if to_hand and self._nursery is not None:
            self._freezing |= to_hand
            self._nursery.start_soon(self._hand_over, frozenset(to_hand), state)

    async def _hand_over(self, shards: frozenset[int], state: LeaseState) -> None:
        # Sockets first, while events still run here: a message read from
        # now on waits in the kernel, or travels with its socket, instead
        # of reaching an object that refuses it.
        try:
            await self._events.freeze(shards)
        finally:
            self._freezing -= shards
            self._handing_over |= shards
        desired = desired_owners(state.members.values())
        by_successor: dict[str | None, set[int]] = {}
        for shard in shards:
            by_successor.setdefault(desired[shard], set()).add(shard)
        for successor_id, group in by_successor.items():
            successor = state.members.get(successor_id) if successor_id else None
            try:
                await self._events.hand_over(group, successor)
            except Exception:
                logger.exception("handing over %d shard(s) failed", len(group))
            try:
                await self._store.release(self.member.member_id, group)
            except StorageError as exc:
                # Still ours in the store: a later round hands them over again.
                logger.warning(
                    "releasing %d shard(s) failed, retried at the next round: %s", len(group), exc
                )
                self._handing_over -= group
                continue
            for shard in group:
                self._held.pop(shard, None)
            self._handing_over -= group
            if successor is not None:
                await self._ask_to_take(successor)
        self.request_round()

    async def _ask_to_take(self, successor: Member) -> None:
        """Have ``successor`` run a lease round now, taking the shards just released.

        Otherwise it takes them at its next round, up to a quarter of the
        lease time later: the objects would wait that long, and a worker
        drained in between (a second rolling restart) would leave with the
        sockets it adopted still waiting for their shard.
        """
        try:
            with trio.fail_after(_CONNECT_TIMEOUT):
                peer = await self.peer(successor)
                await peer.call("round", [])
        except (LinkClosedError, RuntimeError, trio.TooSlowError) as exc:
            logger.info("%s will take its shards at its next round (%s)", successor.member_id, exc)

    async def _serve_round(self, op: str, body: Any, fds: list[int]) -> tuple[Any, list[int]]:
        for fd in fds:
            os.close(fd)
        await self.fresh_round()
        return None, []

    # ----------------------------------------------------------------- links

    async def _accept(self, listener: trio.socket.SocketType) -> None:
        assert self._nursery is not None
        while True:
            try:
                sock, _ = await listener.accept()
            except trio.ClosedResourceError:
                return  # close_links(): no new link
            except OSError as exc:
                if self._links_closing:
                    return
                # Out of descriptors, or a connection reset in the backlog.
                logger.warning("accepting a link failed: %s", exc)
                await trio.sleep(0.1)
                continue
            if self._handshaking >= MAX_PENDING_HANDSHAKES:
                # A member refused here retries (its call waits for an owner).
                sock.close()
                continue
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._handshaking += 1
            self._nursery.start_soon(self._serve_connection, Connection(sock))

    async def _serve_connection(self, connection: Connection) -> None:
        try:
            with trio.fail_after(_CONNECT_TIMEOUT):
                member_id, purpose = await handshake_server(connection, self._key)
        except (LinkClosedError, trio.TooSlowError) as exc:
            logger.warning("refused a link: %s", exc)
            connection.close()
            return
        finally:
            self._handshaking -= 1
        if purpose == PROXY:
            if self._proxy_handler is None:
                connection.close()
                return
            await self._proxy_handler(member_id, connection)
            return
        peer = Peer(connection, self._serve, name=member_id)
        self._incoming.add(peer)
        try:
            await peer.run()
        finally:
            self._incoming.discard(peer)

    async def _serve(self, op: str, body: Any, fds: list[int]) -> tuple[Any, list[int]]:
        handler = self._handlers.get(op)
        if handler is None:
            raise ValueError(f"no handler for {op!r}")
        result, out = await handler(op, body, fds)
        return result, list(out)

    async def peer(self, member: Member) -> Peer:
        """The link to ``member``, connected (and proved) on first use.

        Raises:
            LinkClosedError: it cannot be reached.
        """
        existing = self._peers.get(member.member_id)
        if existing is not None and not existing.is_broken:
            return existing
        pending = self._connecting.get(member.member_id)
        if pending is not None:
            await pending.wait()
            return await self.peer(member)
        done = self._connecting[member.member_id] = trio.Event()
        try:
            return await self._connect(member)
        finally:
            del self._connecting[member.member_id]
            done.set()

    def same_node(self, member: Member) -> bool:
        """True when ``member`` runs on this process's node (descriptors can reach it)."""
        return member.node == self.member.node

    async def open_connection(self, member: Member, purpose: Purpose) -> Connection:
        """A new link connection to ``member``, both ends proved.

        Over a Unix socket on this node, over TCP to another node.

        Raises:
            LinkClosedError: it cannot be reached, or failed to prove itself.
        """
        if self.same_node(member):
            sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: Any = member.address
        else:
            if not member.link:
                raise LinkClosedError(
                    f"{member.member_id} runs on node {member.node!r} and has no TCP link "
                    "(start every node of a deployment with a link host)"
                )
            host, _, port = member.link.rpartition(":")
            host = host.strip("[]")
            sock = trio.socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            address = (host, int(port))
        connection = Connection(sock)
        try:
            with trio.fail_after(_CONNECT_TIMEOUT):
                await sock.connect(address)
                await handshake_client(connection, self._key, self.member.member_id, purpose)
        except (OSError, trio.TooSlowError, LinkClosedError) as exc:
            connection.close()
            raise LinkClosedError(f"cannot reach {member.member_id}: {exc}") from exc
        return connection

    async def _connect(self, member: Member) -> Peer:
        if self._nursery is None or self._links_closing:
            raise LinkClosedError("this member is not running")
        connection = await self.open_connection(member, CALLS)
        peer = Peer(connection, self._serve, name=member.member_id)
        self._peers[member.member_id] = peer
        self._nursery.start_soon(peer.run)
        return peer
