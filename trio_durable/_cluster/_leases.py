"""Shard leases with epochs (fencing tokens), and the membership they rest on.

Each member renews its membership and its leases in one transaction per
*round* (every quarter of the lease time, and on demand). A round also takes
the shards this member should own (:func:`~._placement.desired_owners`) when
they are free, expired, or held by a member that is no longer live. Taking
a shard increments its **epoch**. Every commit of an object's writes checks,
in the same transaction, that the committing member still holds the
object's shard at the epoch it was granted (``Fence``): a member that lost
a shard (killed, paused, partitioned) can never commit for it again, even
if it wakes up believing it still owns it.

A member that should no longer own a shard (a rebalance, a rolling restart)
keeps renewing it until it has handed its objects over, then *releases* it
(owner cleared, epoch kept); the desired member takes it in its next round.

The store is a seam: :class:`SqliteLeaseStore` keeps the tables in the data
directory's database; a networked store keeps them in PostgreSQL. Time for
expiry comes from the store (one clock for every member).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar, runtime_checkable

import attrs
import trio

from .._ids import SHARD_COUNT
from .._storage._backend import Fence
from ._placement import Member, desired_owners

__all__ = [
    "Fence",
    "LeaseHints",
    "LeaseState",
    "LeaseStore",
    "RoundPlan",
    "ShardLease",
    "SqliteLeaseStore",
    "plan_round",
]

T = TypeVar("T")

#: Members silent this many lease times are dropped from the table.
_FORGET_AFTER_LEASES: Final = 10


@attrs.frozen
class ShardLease:
    """One shard's row: who holds it, at which epoch, until when (store time)."""

    shard: int
    owner: str | None
    epoch: int
    expires: float


@attrs.frozen
class RoundPlan:
    """What one member does with the shards in a round.

    Attributes:
        renew: Shards it holds and keeps (their expiry moves on).
        take: Shards it should own that are free, expired or held by a dead member.
        hand_over: Shards it holds that another member should own: it keeps
            renewing them until it has handed their objects over, then
            releases them.
    """

    renew: frozenset[int]
    take: frozenset[int]
    hand_over: frozenset[int]


def plan_round(
    me: str, now: float, live: Collection[Member], leases: Iterable[ShardLease]
) -> RoundPlan:
    """Decide what ``me`` does with every shard, from the table as it is now."""
    desired = desired_owners(live)
    live_ids = {member.member_id for member in live}
    renew: set[int] = set()
    take: set[int] = set()
    hand_over: set[int] = set()
    for lease in leases:
        wanted = desired[lease.shard]
        if lease.owner == me:
            (renew if wanted == me else hand_over).add(lease.shard)
        elif wanted == me and (
            lease.owner is None or lease.expires <= now or lease.owner not in live_ids
        ):
            take.add(lease.shard)
    return RoundPlan(frozenset(renew), frozenset(take), frozenset(hand_over))


@attrs.frozen
class LeaseState:
    """A member's view of the table after its round.

    Attributes:
        now: The store's time when the round ran.
        held: Shard → epoch, for every shard this member holds.
        hand_over: Shards it holds but should give to another member.
        owners: Shard → the member holding it (``None``: nobody).
        members: Live members by id (addresses for the links).
    """

    now: float
    held: Mapping[int, int]
    hand_over: frozenset[int]
    owners: tuple[str | None, ...]
    members: Mapping[str, Member]


#: The columns of ``_td_members``, in :class:`Member`'s order (both stores select them so).
MEMBER_COLUMNS: Final = "member, slot, address, started, heartbeat, node, link"


def member_row(me: Member, now: float) -> tuple[Any, ...]:
    """``me``'s row of ``_td_members`` (in :data:`MEMBER_COLUMNS` order), renewed at ``now``."""
    return (me.member_id, me.slot, me.address, me.started, now, me.node, me.link)


def state_after_round(
    me: str,
    now: float,
    plan: RoundPlan,
    rows: Iterable[tuple[int, str | None, int]],
    live: Collection[Member],
) -> LeaseState:
    """The member's view once its round is applied: ``rows`` are ``(shard, owner, epoch)``."""
    owners: list[str | None] = [None] * SHARD_COUNT
    held: dict[int, int] = {}
    for shard, owner, epoch in rows:
        owners[shard] = owner
        if owner == me:
            held[shard] = epoch
    return LeaseState(
        now=now,
        held=held,
        hand_over=plan.hand_over,
        owners=tuple(owners),
        members={member.member_id: member for member in live},
    )


class LeaseStore(Protocol):
    """Where leases and membership are kept, with one clock for every member."""

    async def setup(self) -> None:
        """Create the tables if missing (idempotent, safe when members start at once)."""

    async def round(self, me: Member, lease_seconds: float) -> LeaseState:
        """Renew ``me``, plan and apply one round, in one transaction."""

    async def release(self, member_id: str, shards: Collection[int]) -> None:
        """Give up shards ``member_id`` holds (owner cleared, epoch kept)."""

    async def leave(self, member_id: str) -> None:
        """Release every shard of ``member_id`` and forget it (a clean exit)."""

    async def revoke(self, member_id: str) -> None:
        """Expire every lease of a member known to be dead (its supervisor saw it exit)."""

    async def aclose(self) -> None:
        """Close the store's connection."""


_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS _td_members (
    member TEXT PRIMARY KEY,
    slot INTEGER NOT NULL,
    address TEXT NOT NULL,
    started REAL NOT NULL,
    heartbeat REAL NOT NULL,
    node TEXT NOT NULL DEFAULT '',
    link TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _td_shards (
    shard INTEGER PRIMARY KEY,
    owner TEXT,
    epoch INTEGER NOT NULL,
    expires REAL NOT NULL
);
"""


@runtime_checkable
class LeaseHints(Protocol):
    """A lease store that can tell its members when another one changed the leases.

    A hint only makes the next lease round come sooner: rounds keep their
    interval whether or not hints arrive (``PgLeaseStore``: LISTEN/NOTIFY).
    """

    async def watch(
        self,
        wake: Callable[[], None],
        *,
        retry_seconds: float = ...,
        task_status: trio.TaskStatus[None] = ...,
    ) -> None:
        """Call ``wake`` on every change another member announces, until cancelled."""


class SqliteLeaseStore:
    """Leases in the data directory's SQLite database (members on one machine).

    Every operation is one ``BEGIN IMMEDIATE`` transaction in a worker
    thread, so it serializes with every commit of every member: a commit's
    fence check and a round's epoch change can never interleave.

    Args:
        path: The database file (``<data_dir>/trio_durable.sqlite3``).
    """

    def __init__(self, path: str | Path) -> None:
        self._path = str(path)
        self._db: sqlite3.Connection | None = None
        self._lock = trio.Lock()

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA busy_timeout=30000")
            self._db = db
        return self._db

    async def _transaction(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``body(db)`` in one IMMEDIATE transaction, in a worker thread."""

        def run() -> T:
            db = self._connection()
            db.execute("BEGIN IMMEDIATE")
            try:
                result = body(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return result

        async with self._lock:
            # Not abandoned on cancellation: a transaction always ends.
            return await trio.to_thread.run_sync(run)

    async def setup(self) -> None:
        def create(db: sqlite3.Connection) -> None:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.executemany(
                "INSERT OR IGNORE INTO _td_shards (shard, owner, epoch, expires) "
                "VALUES (?, NULL, 0, 0)",
                [(shard,) for shard in range(SHARD_COUNT)],
            )

        await self._transaction(create)

    async def round(self, me: Member, lease_seconds: float) -> LeaseState:
        def body(db: sqlite3.Connection) -> LeaseState:
            now = time.time()
            db.execute(
                f"INSERT INTO _td_members ({MEMBER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (member) DO UPDATE SET "
                "heartbeat = excluded.heartbeat, address = excluded.address, link = excluded.link",
                member_row(me, now),
            )
            db.execute(
                "DELETE FROM _td_members WHERE heartbeat < ?",
                (now - _FORGET_AFTER_LEASES * lease_seconds,),
            )
            live = [
                Member(*row)
                for row in db.execute(
                    f"SELECT {MEMBER_COLUMNS} FROM _td_members WHERE heartbeat >= ?",
                    (now - lease_seconds,),
                )
            ]
            leases = [
                ShardLease(shard, owner, epoch, expires)
                for shard, owner, epoch, expires in db.execute(
                    "SELECT shard, owner, epoch, expires FROM _td_shards"
                )
            ]
            plan = plan_round(me.member_id, now, live, leases)
            expires = now + lease_seconds
            keep = plan.renew | plan.hand_over
            if keep:
                db.executemany(
                    "UPDATE _td_shards SET expires = ? WHERE shard = ? AND owner = ?",
                    [(expires, shard, me.member_id) for shard in keep],
                )
            if plan.take:
                db.executemany(
                    "UPDATE _td_shards SET owner = ?, epoch = epoch + 1, expires = ? "
                    "WHERE shard = ?",
                    [(me.member_id, expires, shard) for shard in plan.take],
                )
            rows = db.execute("SELECT shard, owner, epoch FROM _td_shards").fetchall()
            return state_after_round(me.member_id, now, plan, rows, live)

        return await self._transaction(body)

    async def release(self, member_id: str, shards: Collection[int]) -> None:
        rows = [(member_id, shard) for shard in shards]

        def body(db: sqlite3.Connection) -> None:
            db.executemany(
                "UPDATE _td_shards SET owner = NULL, expires = 0 WHERE owner = ? AND shard = ?",
                rows,
            )

        await self._transaction(body)

    async def leave(self, member_id: str) -> None:
        def body(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE _td_shards SET owner = NULL, expires = 0 WHERE owner = ?", (member_id,)
            )
            db.execute("DELETE FROM _td_members WHERE member = ?", (member_id,))

        await self._transaction(body)

    async def revoke(self, member_id: str) -> None:
        def body(db: sqlite3.Connection) -> None:
            db.execute("UPDATE _td_shards SET expires = 0 WHERE owner = ?", (member_id,))
            db.execute("DELETE FROM _td_members WHERE member = ?", (member_id,))

        await self._transaction(body)

    async def aclose(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
