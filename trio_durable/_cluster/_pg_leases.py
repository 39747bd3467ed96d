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
"""

from __future__ import annotations

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

__all__ = ["PgLeaseStore"]

T = TypeVar("T")
Cursor = psycopg.Cursor[Any]

#: Members silent this many lease times are dropped from the table.
_FORGET_AFTER_LEASES: Final = 10


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
            # Every shard row first, in a fixed order: rounds take turns, and
            # commits that read a row FOR SHARE wait or are waited for.
            locked = cursor.execute(
                "SELECT shard, owner, epoch, expires FROM _td_shards ORDER BY shard FOR UPDATE"
            ).fetchall()
            now_row = cursor.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()
            assert now_row is not None
            now = float(now_row[0])
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
            cursor.execute(
                "UPDATE _td_shards SET owner = NULL, expires = 0 "
                "WHERE owner = %s AND shard = ANY(%s)",
                (member_id, wanted),
            )

        await self._transaction(body)

    async def leave(self, member_id: str) -> None:
        """Release every shard of ``member_id`` and forget it (a clean exit)."""

        def body(cursor: Cursor) -> None:
            cursor.execute(
                "UPDATE _td_shards SET owner = NULL, expires = 0 WHERE owner = %s", (member_id,)
            )
            cursor.execute("DELETE FROM _td_members WHERE member = %s", (member_id,))

        await self._transaction(body)

    async def revoke(self, member_id: str) -> None:
        """Expire every lease of a member known to be dead."""

        def body(cursor: Cursor) -> None:
            cursor.execute("UPDATE _td_shards SET expires = 0 WHERE owner = %s", (member_id,))
            cursor.execute("DELETE FROM _td_members WHERE member = %s", (member_id,))

        await self._transaction(body)

    async def aclose(self) -> None:
        """Close the connection. Idempotent."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
