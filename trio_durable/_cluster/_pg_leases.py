"""Shard leases and membership in PostgreSQL: :class:`PgLeaseStore`.

The same tables as :class:`~._leases.SqliteLeaseStore` (``_td_members``,
``_td_shards``), in the database the nodes' :class:`PostgresBackend` uses,
so that a lease round and a commit's fence check meet on the same rows:

* a round is one transaction that first locks every shard row
  (``SELECT ... ORDER BY shard FOR UPDATE``). Rounds of all members
  therefore run one at a time, and a round waits for the commits that read
  some of those rows ``FOR SHARE`` (and they wait for it): an epoch never
  changes between a commit's fence check and its COMMIT;
* time is the database's: ``clock_timestamp()`` read once the locks are
  held (``now()`` would be the time the transaction started, before it
  waited for them), so every member compares expiries on one clock;
* what to renew, take and hand over is decided by :func:`~._leases.plan_round`,
  as for SQLite.

Calls run in a worker thread on one connection of their own, one at a time;
a connection found dead (the database restarted) is replaced on the next
call. Errors are :class:`~trio_durable.StorageError` naming the database.

**Wake-up hints.** A release, a leave, a revoke and a member joining (or
coming back after its heartbeat had lapsed) send ``NOTIFY td_leases`` in
their transaction. :meth:`PgLeaseStore.watch` listens on a connection of its
own and calls back on each notification, so that a member runs its next
round now rather than at its next interval: a released shard is taken, and
a newcomer gets its shards, within a round trip instead of up to a quarter
of the lease later. It is a hint and nothing more: rounds run on their
interval whether or not notifications arrive, so a lost listening
connection (made again after a pause) only makes changes slower to notice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Any, Final, TypeVar

import psycopg
import trio

from .._limits import check_seconds
from .._storage._pg_schema import migrate
from .._storage._postgres import check_database_url, session_settings, storage_errors
from ._leases import (
    MEMBER_COLUMNS,
    LeaseState,
    ShardLease,
    member_row,
    plan_round,
    state_after_round,
)
from ._placement import Member

__all__ = ["CHANNEL", "PgLeaseStore"]

T = TypeVar("T")
Cursor = psycopg.Cursor[Any]

logger: Final = logging.getLogger("trio_durable.cluster")

#: Members silent this many lease times are dropped from the table.
_FORGET_AFTER_LEASES: Final = 10
#: The channel of lease-change notifications.
CHANNEL: Final = "td_leases"
_NOTIFY: Final = f"SELECT pg_notify('{CHANNEL}', %s)"
#: The longest pause between two attempts to make the listening connection again.
_MAX_LISTEN_RETRY: Final = 30.0


def _lock_shards(cursor: Cursor) -> list[tuple[Any, ...]]:
    """Lock every shard row, in shard order; return them as ``(shard, owner, epoch, expires)``.

    Whatever changes shard rows locks them all first, in one order, as
    commits lock theirs (``FOR SHARE``, by shard): an UPDATE alone would
    lock its rows in the table's physical order, and a commit locking the
    same rows in shard order could deadlock with it.
    """
    rows: list[tuple[Any, ...]] = cursor.execute(
        "SELECT shard, owner, epoch, expires FROM _td_shards ORDER BY shard FOR UPDATE"
    ).fetchall()
    return rows


class PgLeaseStore:
    """Leases in a PostgreSQL database shared by the nodes of a deployment.

    Args:
        url: The database's ``postgresql://`` URL (the nodes' storage database).
        timeout: Seconds to wait for a connection before ``StorageError``.

    Raises:
        TypeError, ValueError: a bad URL or timeout (the message says which).
    """

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.where = check_database_url(url)
        self._url = url
        self._timeout = check_seconds("timeout", timeout)
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = trio.Lock()

    def __repr__(self) -> str:
        return f"<PgLeaseStore {self.where}>"

    def _connection(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                conn.close()
            settings = session_settings(self._url)
            settings["application_name"] = "trio_durable leases"
            self._conn = conn = psycopg.connect(
                self._url,
                autocommit=True,
                connect_timeout=max(2, round(self._timeout)),
                **settings,
            )
        return conn

    async def _call(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run ``fn(connection)`` in a worker thread, one call at a time."""

        def run() -> T:
            with storage_errors(self.where, self._timeout):
                conn = self._connection()
                try:
                    return fn(conn)
                except psycopg.OperationalError:
                    if not conn.broken:
                        raise
                # The connection died since the last call (the server
                # restarted): once more on a new one. Every operation here
                # may run twice: a round taken again only moves the epoch on.
                return fn(self._connection())

        async with self._lock:
            # Not abandoned on cancellation: a transaction always ends.
            return await trio.to_thread.run_sync(run)

    async def _transaction(self, body: Callable[[Cursor], T]) -> T:
        def run(conn: psycopg.Connection[Any]) -> T:
            with conn.transaction(), conn.cursor() as cursor:
                return body(cursor)

        return await self._call(run)

    async def setup(self) -> None:
        """Create or migrate the tables (the storage backend's migrations; concurrency-safe)."""

        def run(conn: psycopg.Connection[Any]) -> None:
            migrate(conn)

        await self._call(run)

    async def round(self, me: Member, lease_seconds: float) -> LeaseState:
        """Renew ``me``, plan and apply one round, in one transaction."""

        def body(cursor: Cursor) -> LeaseState:
            locked = _lock_shards(cursor)
            now_row = cursor.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()
            assert now_row is not None
            now = float(now_row[0])
            before = cursor.execute(
                "SELECT heartbeat FROM _td_members WHERE member = %s", (me.member_id,)
            ).fetchone()
            if before is None or float(before[0]) < now - lease_seconds:
                # A member joins (or is live again): the others rebalance now.
                cursor.execute(_NOTIFY, (me.member_id,))
            cursor.execute(
                f"INSERT INTO _td_members ({MEMBER_COLUMNS}) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (member) DO UPDATE SET "
                "heartbeat = excluded.heartbeat, address = excluded.address, link = excluded.link",
                member_row(me, now),
            )
            cursor.execute(
                "DELETE FROM _td_members WHERE heartbeat < %s",
                (now - _FORGET_AFTER_LEASES * lease_seconds,),
            )
            live = [
                Member(*row)
                for row in cursor.execute(
                    f"SELECT {MEMBER_COLUMNS} FROM _td_members WHERE heartbeat >= %s",
                    (now - lease_seconds,),
                ).fetchall()
            ]
            leases = [
                ShardLease(shard, owner, epoch, expires) for shard, owner, epoch, expires in locked
            ]
            plan = plan_round(me.member_id, now, live, leases)
            expires = now + lease_seconds
            keep = sorted(plan.renew | plan.hand_over)
            if keep:
                cursor.execute(
                    "UPDATE _td_shards SET expires = %s WHERE shard = ANY(%s) AND owner = %s",
                    (expires, keep, me.member_id),
                )
            if plan.take:
                cursor.execute(
                    "UPDATE _td_shards SET owner = %s, epoch = epoch + 1, expires = %s "
                    "WHERE shard = ANY(%s)",
                    (me.member_id, expires, sorted(plan.take)),
                )
            rows = cursor.execute("SELECT shard, owner, epoch FROM _td_shards").fetchall()
            return state_after_round(me.member_id, now, plan, rows, live)

        return await self._transaction(body)

    async def release(self, member_id: str, shards: Collection[int]) -> None:
        """Give up shards ``member_id`` holds (owner cleared, epoch kept)."""
        wanted = sorted(shards)

        def body(cursor: Cursor) -> None:
            _lock_shards(cursor)
            cursor.execute(
                "UPDATE _td_shards SET owner = NULL, expires = 0 "
                "WHERE owner = %s AND shard = ANY(%s)",
                (member_id, wanted),
            )
            cursor.execute(_NOTIFY, (member_id,))

        await self._transaction(body)

    async def leave(self, member_id: str) -> None:
        """Release every shard of ``member_id`` and forget it (a clean exit)."""

        def body(cursor: Cursor) -> None:
            _lock_shards(cursor)
            cursor.execute(
                "UPDATE _td_shards SET owner = NULL, expires = 0 WHERE owner = %s", (member_id,)
            )
            cursor.execute("DELETE FROM _td_members WHERE member = %s", (member_id,))
            cursor.execute(_NOTIFY, (member_id,))

        await self._transaction(body)

    async def revoke(self, member_id: str) -> None:
        """Expire every lease of a member known to be dead."""

        def body(cursor: Cursor) -> None:
            _lock_shards(cursor)
            cursor.execute("UPDATE _td_shards SET expires = 0 WHERE owner = %s", (member_id,))
            cursor.execute("DELETE FROM _td_members WHERE member = %s", (member_id,))
            cursor.execute(_NOTIFY, (member_id,))

        await self._transaction(body)

    def _listening_connection(self) -> psycopg.Connection[Any]:
        settings = session_settings(self._url)
        settings["application_name"] = "trio_durable lease hints"
        conn = psycopg.connect(
            self._url, autocommit=True, connect_timeout=max(2, round(self._timeout)), **settings
        )
        try:
            conn.execute(f"LISTEN {CHANNEL}")
        except BaseException:
            conn.close()
            raise
        return conn

    async def watch(
        self,
        wake: Callable[[], None],
        *,
        retry_seconds: float = 1.0,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Call ``wake`` on every lease change another member announces, until cancelled.

        ``wake`` should ask for a lease round (``ClusterMember.request_round``);
        it is also called each time the listening connection is made (again),
        since a change may have been missed meanwhile. Started (``task_status``)
        once the first attempt to listen has ended, whether it succeeded or
        not. A connection that cannot be made, or is lost, is tried again
        after ``retry_seconds``, doubled after each failure up to 30 s;
        meanwhile the member's rounds keep their interval.
        """
        pause = retry_seconds
        started = False
        while True:
            conn: psycopg.Connection[Any] | None = None
            fd = -1
            try:
                conn = await trio.to_thread.run_sync(self._listening_connection)
                pause = retry_seconds
                if not started:
                    task_status.started()
                    started = True
                fd = conn.fileno()
                wake()
                while True:
                    await trio.lowlevel.wait_readable(fd)
                    # Non-blocking: what arrived is read, nothing is waited for.
                    if any(True for _ in conn.notifies(timeout=0)):
                        wake()
            except psycopg.Error as exc:
                logger.warning(
                    "no lease-change hints from %s (%s); polling only, listening again in %g s",
                    self.where,
                    exc,
                    pause,
                )
            finally:
                if conn is not None:
                    if fd >= 0:
                        trio.lowlevel.notify_closing(fd)
                    conn.close()
            if not started:
                task_status.started()
                started = True
            await trio.sleep(pause)
            pause = min(pause * 2, _MAX_LISTEN_RETRY)

    async def aclose(self) -> None:
        """Close the connection. Idempotent."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
