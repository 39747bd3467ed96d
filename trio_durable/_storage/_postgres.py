"""PostgreSQL storage, for one node or the nodes of a cluster: :class:`PostgresBackend`.

Everything a node needs lives in the database (``_pg_schema.py`` lists the
tables): the ID secret, the object directory, key-value data, the alarm
index, the shard and member tables the lease store keeps (so a commit's
fence check and a lease round serialize on the same rows), and each
object's SQL database, page by page.

**Driver.** psycopg 3's synchronous API with a ``psycopg_pool`` connection
pool, every call in a worker thread (``trio.to_thread.run_sync``): no
maintained PostgreSQL driver supports Trio natively (psycopg#29 and
asyncpg#1119 are open). Everything psycopg does is behind this class, so a
Trio-native driver can replace it without touching the runtime. Under
Trio's ``MockClock`` the calls run inline instead, as ``SqliteBackend``'s
commits do (``autojump_clock`` would jump time while a thread works).

**Commits.** One ``commit()`` is one PostgreSQL transaction for the writes
of many objects (the storage engine's group commit): their key-value
writes, alarms, SQL pages and, with a fence, the check that this member
still holds each shard at its epoch (``SELECT ... FOR SHARE`` of the shard
rows, in the same transaction). The output gate waits for the COMMIT, which
PostgreSQL makes durable before it answers.

**SQL.** An object's SQLite database lives on the node running it, as a
local copy (``_sqlcopies.py``); each commit stores the pages its local
commits changed, read from SQLite's write-ahead log, with a version check;
an activation on a node without a current copy first loads it (the runtime
awaits :meth:`PostgresBackend.sql_loader` before the constructor runs).
A database may grow to ``max_sql_database_bytes`` (64 MiB by default).

**Who may write.** A runtime without a fence (one node, ``exclusive=True``)
takes a session advisory lock at open and writes a token into
``_td_owner``; every commit checks the token in its transaction, so a
second runtime is refused at open and one that took over (after the first
lost its connection) fences the first out. The nodes of a cluster
(``exclusive=False``) share the lock and fence every commit by epoch.

**Failures.** A database that cannot be reached, or that fails a
statement, gives :class:`~trio_durable.StorageError` (never a raw psycopg
error) naming the database without its password. A connection found dead
(the server restarted) is replaced and the call tried once more when that
is safe: a read, or a transaction that had not reached COMMIT. A commit
whose COMMIT was sent but not answered is reported as failed: its objects
reset and nothing of it was acknowledged.

**Recovery.** Once a call finds the database out of reach, a watcher
thread tries a connection of its own every ``RECOVERY_PROBE_SECONDS``;
when one succeeds, the pool is replaced by a new one. The pool would
reconnect by itself, but its attempts back off exponentially (1, 2, 4,
8 s...): after an outage of some seconds, calls would keep failing for
seconds after the database returned.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import secrets
import socket
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import psycopg
import psycopg_pool
import trio
from psycopg import conninfo

from .._exceptions import StorageError
from .._ids import shard_of
from .._limits import MAX_SQL_DATABASE_BYTES, check_positive_int, check_seconds
from ._backend import (
    AlarmRecord,
    Fence,
    KeyRange,
    ObjectEntry,
    ObjectWrite,
    SqlLoader,
    SqlPages,
    StoredAlarm,
)
from ._pg_schema import OWNER_LOCK_KEY, migrate
from ._secret import check_secret, missing_secret_error
from ._sqlcopies import UNVERIFIED, LocalCopies, Tag, remove_abandoned

__all__ = [
    "SQL_PAGES_QUERY",
    "CommitUnknownError",
    "PostgresBackend",
    "check_database_url",
    "storage_errors",
    "write_sql_file",
]

T = TypeVar("T")
Cursor = psycopg.Cursor[Any]

#: Connection settings used unless the URL sets them: fail a dead TCP peer
#: after 30 s instead of the kernel's ~15 minutes.
_CONNECTION_DEFAULTS: Final = {
    "tcp_user_timeout": "30000",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "application_name": "trio_durable",
}

#: Milliseconds a session may sit in a transaction without sending anything
#: before the server ends it. A process paused or partitioned inside a
#: commit or a lease round would otherwise hold its row locks, and with them
#: every other node's lease rounds, for as long as it stays paused.
IDLE_IN_TRANSACTION_MS: Final = 1000


def session_settings(url: str) -> dict[str, Any]:
    """``psycopg.connect`` keyword arguments every session of ``url`` gets.

    The defaults above unless the URL sets them, and always the
    idle-in-transaction timeout (added to the URL's own ``options``).
    """
    given = conninfo.conninfo_to_dict(url)
    settings: dict[str, Any] = {
        key: value for key, value in _CONNECTION_DEFAULTS.items() if key not in given
    }
    options = str(given.get("options") or "")
    settings["options"] = (
        f"{options} -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}".strip()
    )
    return settings


#: Seconds between two connection attempts of the recovery watcher.
RECOVERY_PROBE_SECONDS: Final = 0.25

#: The name of every directory of local SQL copies starts with this.
_COPIES_PREFIX: Final = "trio-durable-sql-"
#: Seconds between two checks that the owner lock's session is alive.
_PLACE_CHECK_SECONDS: Final = 1.0
#: How many objects the backend remembers as recorded in the directory.
_MAX_RECORDED: Final = 200_000

_SECRET_SAMPLE: Final = (
    "(SELECT namespace, id, name FROM _td_objects WHERE name IS NOT NULL LIMIT 1) "
    "UNION ALL "
    "(SELECT namespace, id, name FROM _td_objects WHERE name IS NULL LIMIT 1)"
)
_HOLDS_OBJECTS: Final = (
    "SELECT EXISTS (SELECT 1 FROM _td_objects) OR EXISTS (SELECT 1 FROM _td_kv) "
    "OR EXISTS (SELECT 1 FROM _td_alarms) OR EXISTS (SELECT 1 FROM _td_sql_databases)"
)
_RECORD_OBJECTS: Final = (
    "INSERT INTO _td_objects (namespace, id, name) "
    "SELECT * FROM unnest(%s::text[], %s::text[], %s::bytea[]) "
    "ON CONFLICT (namespace, id) DO UPDATE SET name = excluded.name "
    "WHERE _td_objects.name IS NULL AND excluded.name IS NOT NULL"
)


#: An object's stored SQL database, page by page, for :func:`write_sql_file`
#: (parameters: namespace, id).
SQL_PAGES_QUERY: Final = (
    "SELECT d.page_size, d.page_count, d.version, p.page, p.data "
    "FROM _td_sql_databases d LEFT JOIN _td_sql_pages p "
    "ON p.namespace = d.namespace AND p.id = d.id "
    "WHERE d.namespace = %s AND d.id = %s ORDER BY p.page"
)


def _redacted(url: str) -> str:
    """``url`` without its password and query (which may carry one), for messages."""
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    netloc = f"{userinfo.split(':', 1)[0]}@{hostport}" if at else hostport
    return f"{parts.scheme}://{netloc}{parts.path}"


def check_database_url(url: object) -> str:
    """Check a ``postgresql://`` URL; return it without its password (for messages).

    Raises:
        TypeError: ``url`` is not a str.
        ValueError: it is not a ``postgresql://`` (or ``postgres://``) URL
            libpq can parse; the message says what is wrong.
    """
    if not isinstance(url, str):
        raise TypeError(f"database must be a postgresql:// URL (a str), got {url!r}")
    scheme = url.partition("://")[0] if "://" in url else ""
    if scheme not in ("postgresql", "postgres"):
        shown = _redacted(url) if scheme else url[:40]
        raise ValueError(
            f"database must be a postgresql:// URL "
            f"(postgresql://user@host:port/dbname), got {shown!r}"
        )
    shown = _redacted(url)
    try:
        urlsplit(url).port  # noqa: B018 (it raises for a port that is not a number)
        conninfo.conninfo_to_dict(url)
    except (ValueError, psycopg.Error) as exc:
        raise ValueError(f"database URL {shown!r} is not valid: {exc}") from None
    return shown


class CommitUnknownError(Exception):
    """The connection failed during COMMIT (the cause is the driver's error)."""


@contextlib.contextmanager
def storage_errors(where: str, timeout: float) -> Iterator[None]:
    """Turn psycopg's errors into :class:`StorageError` naming the database ``where``."""
    try:
        yield
    except psycopg_pool.PoolTimeout as exc:
        raise StorageError(
            f"the database {where} is unreachable: no connection within {timeout:g} s ({exc})"
        ) from exc
    except CommitUnknownError as exc:
        raise StorageError(
            f"the connection to the database {where} failed during COMMIT, so whether it "
            f"was applied is unknown; it counts as failed ({exc.__cause__})"
        ) from exc.__cause__
    except psycopg.OperationalError as exc:
        raise StorageError(f"the database {where} failed: {exc}") from exc
    except psycopg.Error as exc:
        raise StorageError(f"the database {where} refused an operation: {exc}") from exc


def _tag(fence: Fence | None, hex_id: str) -> Tag:
    if fence is None:
        return None
    return (fence.member_id, fence.epochs.get(shard_of(hex_id), -1))


def _text(value: bytes | None) -> str | None:
    return None if value is None else bytes(value).decode()


def _bytes(text: str | None) -> bytes | None:
    return None if text is None else text.encode()


class PostgresBackend:
    """Storage in a PostgreSQL database (version 13 or later), reached by URL.

    Args:
        url: ``postgresql://user[:password]@host[:port]/dbname[?param=value...]``;
            any libpq parameter may follow ``?`` (``sslmode``, ``connect_timeout``, ...).
        exclusive: ``True`` (a single node): refuse to start while another
            runtime uses the database, and commit without a fence.
            ``False``: one of a cluster's nodes, which share the database and
            fence every commit by epoch.
        pool_size: Most connections the node opens (reads of many objects
            run in parallel; commits are one at a time).
        timeout: Seconds to wait for a connection (at open, and for each
            call while the database is unreachable) before ``StorageError``.
        cache_dir: Where the local copies of SQL databases go (a private
            directory is made inside and removed at close); default: the
            system's temporary directory.
        max_sql_database_bytes: The largest an object's SQL database may grow.
        max_open_sql: How many SQL copies stay open at once.
        in_thread: Run the calls in worker threads. The default (``None``)
            does, except under Trio's ``MockClock``.

    Raises:
        TypeError, ValueError: an argument is wrong (the message names it).
    """

    def __init__(
        self,
        url: str,
        *,
        exclusive: bool = True,
        pool_size: int = 8,
        timeout: float = 5.0,
        cache_dir: str | os.PathLike[str] | None = None,
        max_sql_database_bytes: int = MAX_SQL_DATABASE_BYTES,
        max_open_sql: int = 256,
        in_thread: bool | None = None,
    ) -> None:
        self.where = check_database_url(url)
        self.url = url
        self.exclusive = bool(exclusive)
        self.pool_size = check_positive_int("pool_size", pool_size)
        self.timeout = check_seconds("timeout", timeout)
        self.max_sql_database_bytes = check_positive_int(
            "max_sql_database_bytes", max_sql_database_bytes
        )
        self.max_open_sql = check_positive_int("max_open_sql", max_open_sql)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.in_thread = in_thread
        self._pool: psycopg_pool.ConnectionPool[psycopg.Connection[Any]] | None = None
        self._copies: LocalCopies | None = None
        self._holder: psycopg.Connection[Any] | None = None
        self._holder_lock = threading.Lock()
        self._token: str | None = None
        self._next_place_check = 0.0
        # The recovery watcher (see the module docstring), and when to stop it.
        self._recovery: threading.Thread | None = None
        self._recovery_lock = threading.Lock()
        self._closing = threading.Event()
        self._connection_errors_seen = 0
        # Objects known to be in the directory (True: with their name), so
        # that commits do not upsert their rows again.
        self._recorded_objects: dict[tuple[str, str], bool] = {}
        given = conninfo.conninfo_to_dict(url)
        self._connect_kwargs = session_settings(url)
        if "connect_timeout" not in given:
            # libpq counts whole seconds, and at least 2.
            self._connect_kwargs["connect_timeout"] = str(max(2, math.ceil(self.timeout)))

    def __repr__(self) -> str:
        return f"<PostgresBackend {self.where}>"

    @property
    def threaded(self) -> bool:
        """True when calls run in worker threads (see ``in_thread``)."""
        if self.in_thread is not None:
            return self.in_thread
        clock = trio.lowlevel.current_clock()
        return getattr(clock, "autojump_threshold", None) is None

    # ------------------------------------------------------------- plumbing

    @property
    def _copies_(self) -> LocalCopies:
        if self._copies is None:
            raise RuntimeError("the PostgreSQL backend is not open")
        return self._copies

    @property
    def pool(self) -> psycopg_pool.ConnectionPool[psycopg.Connection[Any]]:
        """The connection pool (raises if the backend is not open)."""
        if self._pool is None:
            raise RuntimeError("the PostgreSQL backend is not open")
        return self._pool

    async def _run(self, fn: Callable[[], T], *, abandon: bool = False) -> T:
        """Run ``fn`` (blocking I/O) in a worker thread, with psycopg's errors made ours.

        ``abandon``: a cancelled caller does not wait for it (reads only).
        """
        call = functools.partial(self._guarded, fn)
        if self.threaded:
            return await trio.to_thread.run_sync(call, abandon_on_cancel=abandon)
        return call()

    def _guarded(self, fn: Callable[[], T]) -> T:
        with storage_errors(self.where, self.timeout):
            return fn()

    def _attempts(self, body: Callable[[psycopg.Connection[Any]], T], *, transaction: bool) -> T:
        """Run ``body`` on a pooled connection; once more on a fresh one if it was dead.

        A second try is safe for a read and for a transaction that failed
        before its COMMIT (nothing of it was applied); a failure during
        COMMIT raises :class:`CommitUnknownError`.
        """
        for attempt in (1, 2):
            # Read at each attempt: the recovery watcher may have replaced it
            # (a caller waiting on the old one gets PoolClosed, and tries again).
            pool = self.pool
            committing = False
            try:
                with pool.connection() as conn:
                    if not transaction:
                        return body(conn)
                    with conn.transaction():
                        result = body(conn)
                        committing = True
                    return result
            except psycopg_pool.PoolTimeout:
                self._watch_for_recovery(pool)
                raise
            except psycopg.OperationalError as exc:
                if committing:
                    self._watch_for_recovery(pool)
                    raise CommitUnknownError() from exc
                if attempt == 2:
                    self._watch_for_recovery(pool)
                    raise
                # Idle connections from before a server restart are all dead:
                # drop them before trying again.
                with contextlib.suppress(psycopg.Error):
                    pool.check()
        raise AssertionError("unreachable")

    def _new_pool(self) -> psycopg_pool.ConnectionPool[psycopg.Connection[Any]]:
        return psycopg_pool.ConnectionPool(
            self.url,
            min_size=1,
            max_size=self.pool_size,
            kwargs={"autocommit": True, **self._connect_kwargs},
            timeout=self.timeout,
            open=False,
            name="trio_durable",
        )

    def _watch_for_recovery(self, pool: psycopg_pool.ConnectionPool[Any]) -> None:
        """Start the recovery watcher if ``pool`` failed to connect since the last look.

        A pool merely exhausted (every connection busy) has no new
        connection error: it needs no watcher.
        """
        errors = int(pool.get_stats().get("connections_errors", 0))
        with self._recovery_lock:
            failed = errors > self._connection_errors_seen
            self._connection_errors_seen = errors
            running = self._recovery is not None and self._recovery.is_alive()
            if not failed or running or self._closing.is_set():
                return
            self._recovery = threading.Thread(
                target=self._recover, name="trio_durable database recovery", daemon=True
            )
            self._recovery.start()

    def _recover(self) -> None:
        """Try a connection until one succeeds, then replace the pool (in its own thread)."""
        while not self._closing.wait(RECOVERY_PROBE_SECONDS):
            try:
                psycopg.connect(self.url, autocommit=True, **self._connect_kwargs).close()
            except psycopg.Error:
                continue
            fresh = self._new_pool()
            fresh.open(wait=False)
            with self._recovery_lock:
                old, self._pool = self._pool, fresh
                self._connection_errors_seen = 0
                if old is None or self._closing.is_set():  # closed meanwhile
                    self._pool = old
                    fresh.close()
                    return
            old.close(timeout=self.timeout)
            return

    def _read(self, body: Callable[[Cursor], T]) -> T:
        def run(conn: psycopg.Connection[Any]) -> T:
            with conn.cursor() as cursor:
                return body(cursor)

        return self._attempts(run, transaction=False)

    def _transact(self, body: Callable[[Cursor], T]) -> T:
        def run(conn: psycopg.Connection[Any]) -> T:
            with conn.cursor() as cursor:
                return body(cursor)

        return self._attempts(run, transaction=True)

    # ------------------------------------------------------- open and close

    async def open(self) -> None:
        """Connect, create or migrate the tables, and take this runtime's place.

        Raises:
            StorageError: the database cannot be reached, refuses the
                migration, holds a newer schema, or is in use by a runtime
                that does not share it (the message names the holder).
        """
        if self._pool is not None:
            return
        await self._run(self._open_sync)

    def _open_sync(self) -> None:
        self._closing.clear()
        try:
            # A direct connection first: its error says why (refused, bad
            # password, no such database), where the pool's would only time out.
            with psycopg.connect(self.url, autocommit=True, **self._connect_kwargs) as conn:
                migrate(conn)
        except psycopg.Error as exc:
            raise StorageError(f"cannot open the database {self.where}: {exc}") from exc
        pool = self._new_pool()
        try:
            pool.open(wait=True, timeout=self.timeout)
            self._take_place()
        except BaseException:
            pool.close()
            self._release_place()
            raise
        parent = self.cache_dir if self.cache_dir is not None else Path(tempfile.gettempdir())
        # Copies left by a process that was killed: nobody holds their lock.
        remove_abandoned(parent, _COPIES_PREFIX)
        directory = parent / f"{_COPIES_PREFIX}{os.getpid()}-{secrets.token_hex(6)}"
        copies = LocalCopies(
            directory, max_open=self.max_open_sql, max_bytes=self.max_sql_database_bytes
        )
        try:
            copies.open()
        except OSError as exc:
            pool.close()
            self._release_place()
            raise StorageError(
                f"cannot create the SQL cache directory {str(directory)!r}: {exc}"
            ) from exc
        self._pool, self._copies = pool, copies

    def _take_place(self) -> None:
        """Take the owner lock (exclusive or shared) and write or clear the owner token."""
        conn = psycopg.connect(self.url, autocommit=True, **self._connect_kwargs)
        try:
            take = "pg_try_advisory_lock" if self.exclusive else "pg_try_advisory_lock_shared"
            row = conn.execute(f"SELECT {take}(%s)", (OWNER_LOCK_KEY,)).fetchone()
            if row is None or not row[0]:
                raise StorageError(self._in_use(conn))
            if self.exclusive:
                token = secrets.token_hex(16)
                conn.execute(
                    "UPDATE _td_owner SET token = %s, pid = %s, host = %s, "
                    "since = extract(epoch FROM now())",
                    (token, os.getpid(), socket.gethostname()),
                )
                self._token = token
            else:
                # The shared lock proves no single runtime is alive: a token
                # left by one that died must not fence the cluster out.
                conn.execute(
                    "UPDATE _td_owner SET token = NULL, pid = NULL, host = NULL, since = NULL "
                    "WHERE token IS NOT NULL"
                )
        except BaseException:
            conn.close()
            raise
        self._holder = conn

    def _in_use(self, conn: psycopg.Connection[Any]) -> str:
        row = conn.execute("SELECT token, pid, host, since FROM _td_owner").fetchone()
        if row is not None and row[0] is not None:
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(row[3])))
            holder = f"a single runtime (process {row[1]} on {row[2]}, since {since})"
        else:
            holder = "the nodes of a cluster"
        wanted = "a single runtime" if self.exclusive else "a cluster node"
        return (
            f"the database {self.where} is in use by {holder}; it cannot be opened as "
            f"{wanted} at the same time (stop the other, or run every node as a cluster)"
        )

    def _release_place(self) -> None:
        with self._holder_lock:
            holder, self._holder = self._holder, None
        if holder is None:
            return
        with contextlib.suppress(psycopg.Error):
            if self.exclusive and not holder.broken:
                holder.execute(
                    "UPDATE _td_owner SET token = NULL, pid = NULL, host = NULL, since = NULL "
                    "WHERE token = %s",
                    (self._token,),
                )
        holder.close()

    def _keep_place(self) -> None:
        """Take the owner lock again if its session died (the server restarted, say).

        Called after a commit succeeded (the database is reachable), at most
        once a second. The token checked by every commit is what fences; the
        lock only makes a second runtime's open fail at once, so a failure to
        take it again here changes nothing else.
        """
        with self._holder_lock:
            now = time.monotonic()
            if now < self._next_place_check:
                return
            self._next_place_check = now + _PLACE_CHECK_SECONDS
            holder = self._holder
            if holder is not None and not holder.closed:
                try:
                    holder.execute("SELECT 1")
                    return
                except psycopg.Error:
                    holder.close()
            take = "pg_try_advisory_lock" if self.exclusive else "pg_try_advisory_lock_shared"
            conn: psycopg.Connection[Any] | None = None
            try:
                conn = psycopg.connect(self.url, autocommit=True, **self._connect_kwargs)
                row = conn.execute(f"SELECT {take}(%s)", (OWNER_LOCK_KEY,)).fetchone()
            except psycopg.Error:
                row = None
            if row is None or not row[0]:
                if conn is not None:
                    conn.close()
                return
            self._holder = conn

    async def aclose(self) -> None:
        """Close the connections and remove the local SQL copies. Idempotent."""
        copies, self._copies = self._copies, None
        if copies is not None:
            copies.close()
        self._closing.set()
        with self._recovery_lock:
            pool, self._pool = self._pool, None
            recovery = self._recovery
        if pool is None:
            return

        def close() -> None:
            try:
                self._release_place()
            finally:
                pool.close(timeout=self.timeout)
                if recovery is not None:
                    recovery.join(self.timeout)

        with trio.CancelScope(shield=True):
            if self.threaded:
                await trio.to_thread.run_sync(close)
            else:
                close()

    # --------------------------------------------------------------- secret

    async def load_secret(self) -> bytes:
        """The ID secret, created once per database (the first node to start makes it).

        Raises:
            StorageError: the database holds objects but no secret, or a secret
                they were not minted with (replaced): either would orphan them.
        """

        def load(cursor: Cursor) -> bytes:
            row = cursor.execute("SELECT value FROM _td_meta WHERE key = 'id_secret'").fetchone()
            if row is not None:
                secret = bytes(row[0])
                sample = [
                    ObjectEntry(ns, hex_id, _text(name))
                    for ns, hex_id, name in cursor.execute(_SECRET_SAMPLE).fetchall()
                ]
                check_secret(secret, sample, where=f"the database {self.where}")
                return secret
            holds = cursor.execute(_HOLDS_OBJECTS).fetchone()
            if holds is not None and holds[0]:
                raise missing_secret_error(f"the database {self.where}")
            cursor.execute(
                "INSERT INTO _td_meta (key, value) VALUES ('id_secret', %s) "
                "ON CONFLICT (key) DO NOTHING",
                (secrets.token_bytes(32),),
            )
            # Another node may have won the race: everyone reads the one stored.
            row = cursor.execute("SELECT value FROM _td_meta WHERE key = 'id_secret'").fetchone()
            assert row is not None
            return bytes(row[0])

        return await self._run(lambda: self._transact(load))

    # --------------------------------------------------------------- writes

    async def record_objects(self, entries: Sequence[ObjectEntry]) -> None:
        """Remember objects; a name, once known, is kept."""
        if not entries:
            return
        columns = (
            [e.namespace for e in entries],
            [e.hex_id for e in entries],
            [_bytes(e.name) for e in entries],
        )

        def record(cursor: Cursor) -> None:
            cursor.execute(_RECORD_OBJECTS, columns)

        await self._run(lambda: self._transact(record))
        for entry in entries:
            self._note_recorded(entry.namespace, entry.hex_id, entry.name)

    async def commit(
        self, writes: Sequence[ObjectWrite], fence: Fence | None = None
    ) -> frozenset[int]:
        """Apply a batch of many objects' writes in one PostgreSQL transaction.

        With a ``fence``, the shard rows are read ``FOR SHARE`` in the same
        transaction: writes of shards the fence no longer holds are left out
        and their shards returned. Without one, this runtime's owner token
        is checked instead (``exclusive=True``).

        Raises:
            StorageError: the database failed or could not be reached, another
                runtime took over, or an object's stored SQL database changed
                under its copy; nothing of the batch was applied (or, if the
                connection died during COMMIT, it is unknown whether it was).
        """
        if not writes:
            return frozenset()
        copies = self._copies_
        copies.sweep()
        unrecorded = [w for w in writes if not self._recorded(w)]
        marked = frozenset(id(w) for w in unrecorded)  # read here, in the loop's thread
        try:
            refused = await self._run(functools.partial(self._commit_sync, writes, fence, marked))
        except BaseException:
            # Their local copies hold changes that were not stored.
            for write in writes:
                if write.sql is not None:
                    copies.discard((write.namespace, write.hex_id))
            raise
        for write in writes:
            key = (write.namespace, write.hex_id)
            if shard_of(write.hex_id) in refused:
                if write.sql is not None:
                    copies.discard(key)
            elif write.sql is not None:
                copies.retag(key, _tag(fence, write.hex_id))
            elif write.clear:
                copies.stored_elsewhere(key)
        for write in unrecorded:
            if shard_of(write.hex_id) not in refused:
                self._note_recorded(write.namespace, write.hex_id, write.name)
        return refused

    def _recorded(self, write: ObjectWrite) -> bool:
        """True if the directory has the object (with its name, if the write has one)."""
        named = self._recorded_objects.get((write.namespace, write.hex_id))
        return named is not None and (named or write.name is None)

    def _note_recorded(self, namespace: str, hex_id: str, name: str | None) -> None:
        # The directory never forgets an object, so this can only be stale the
        # other way (a name another node recorded): then the upsert runs again.
        known = self._recorded_objects
        key = (namespace, hex_id)
        known[key] = known.get(key, False) or name is not None
        if len(known) > _MAX_RECORDED:
            del known[next(iter(known))]

    def _commit_sync(
        self, writes: Sequence[ObjectWrite], fence: Fence | None, unrecorded: frozenset[int]
    ) -> frozenset[int]:
        """The commit's transaction, in a worker thread.

        ``unrecorded`` holds the ``id()`` of the writes whose objects may be
        missing from the directory (read in the event loop's thread).
        """

        def body(cursor: Cursor) -> frozenset[int]:
            self._check_owner(cursor)
            accepted = writes
            refused: frozenset[int] = frozenset()
            if fence is not None:
                refused = _refused_shards(cursor, writes, fence)
                if refused:
                    accepted = [w for w in writes if shard_of(w.hex_id) not in refused]
            _apply(cursor, accepted, [w for w in accepted if id(w) in unrecorded])
            return refused

        refused = self._transact(body)
        self._keep_place()
        return refused

    def _check_owner(self, cursor: Cursor) -> None:
        """Only the runtime whose token is stored may write.

        The row is read ``FOR SHARE``: a takeover waits for this commit to end.
        """
        row = cursor.execute("SELECT token FROM _td_owner FOR SHARE").fetchone()
        token = None if row is None else row[0]
        if self.exclusive and token != self._token:
            raise StorageError(
                f"another runtime took over the database {self.where} (its owner token "
                "changed): this runtime may no longer write to it"
            )
        if not self.exclusive and token is not None:
            raise StorageError(
                f"a single runtime took over the database {self.where}: the cluster's "
                "nodes may no longer write to it"
            )

    # ------------------------------------------------------------------ reads

    async def list_objects(self, namespace: str) -> list[ObjectEntry]:
        """Every recorded object of ``namespace``, ordered by ID."""

        def query(cursor: Cursor) -> list[tuple[Any, ...]]:
            return cursor.execute(
                'SELECT id, name FROM _td_objects WHERE namespace = %s ORDER BY id COLLATE "C"',
                (namespace,),
            ).fetchall()

        rows = await self._run(lambda: self._read(query), abandon=True)
        return [ObjectEntry(namespace, hex_id, _text(name)) for hex_id, name in rows]

    async def read(self, namespace: str, hex_id: str, keys: Sequence[str]) -> Mapping[str, bytes]:
        """Committed values of the keys that exist."""
        if not keys:
            return {}
        wanted = [key.encode() for key in keys]

        def query(cursor: Cursor) -> list[tuple[Any, ...]]:
            return cursor.execute(
                "SELECT key, value FROM _td_kv WHERE namespace = %s AND id = %s AND key = ANY(%s)",
                (namespace, hex_id, wanted),
            ).fetchall()

        rows = await self._run(lambda: self._read(query), abandon=True)
        return {bytes(key).decode(): bytes(value) for key, value in rows}

    async def read_range(
        self, namespace: str, hex_id: str, key_range: KeyRange
    ) -> list[tuple[str, bytes]]:
        """Committed entries of one object within ``key_range``, in key byte order."""
        parts = ["SELECT key, value FROM _td_kv WHERE namespace = %s AND id = %s"]
        params: list[object] = [namespace, hex_id]
        if key_range.start is not None:
            parts.append("AND key >= %s")
            params.append(key_range.start.encode())
        if key_range.end is not None:
            parts.append("AND key < %s")
            params.append(key_range.end.encode())
        parts.append("ORDER BY key DESC" if key_range.reverse else "ORDER BY key")
        if key_range.limit is not None:
            parts.append("LIMIT %s")
            params.append(key_range.limit)
        statement = " ".join(parts).encode()

        def query(cursor: Cursor) -> list[tuple[Any, ...]]:
            return cursor.execute(statement, params).fetchall()

        rows = await self._run(lambda: self._read(query), abandon=True)
        return [(bytes(key).decode(), bytes(value)) for key, value in rows]

    async def read_alarm(self, namespace: str, hex_id: str) -> AlarmRecord | None:
        """The object's committed alarm."""

        def query(cursor: Cursor) -> tuple[Any, ...] | None:
            return cursor.execute(
                "SELECT time, scheduled, retry FROM _td_alarms WHERE namespace = %s AND id = %s",
                (namespace, hex_id),
            ).fetchone()

        row = await self._run(lambda: self._read(query), abandon=True)
        return None if row is None else AlarmRecord(row[0], row[1], row[2])

    async def load_alarms(self, shards: Collection[int] | None = None) -> list[StoredAlarm]:
        """The stored alarms (of ``shards`` only, when given), with the object's name if known.

        A node that takes some shards reads their alarms alone (an index on
        the shard), not every alarm of the deployment.
        """
        statement = (
            "SELECT a.namespace, a.id, COALESCE(a.name, o.name), a.time, a.scheduled, "
            "a.retry FROM _td_alarms a LEFT JOIN _td_objects o "
            "ON a.namespace = o.namespace AND a.id = o.id"
        )
        params: tuple[Any, ...] = ()
        if shards is not None:
            statement += " WHERE a.shard = ANY(%s)"
            params = (sorted(shards),)

        def query(cursor: Cursor) -> list[tuple[Any, ...]]:
            return cursor.execute(statement.encode(), params).fetchall()

        rows = await self._run(lambda: self._read(query), abandon=True)
        return [
            StoredAlarm(ns, hx, _text(name), AlarmRecord(t, s, r)) for ns, hx, name, t, s, r in rows
        ]

    # -------------------------------------------------------------------- SQL

    def has_sql_database(self, namespace: str, hex_id: str) -> bool:
        """True if the object's SQL database is here (loaded, or made by this activation).

        A stored database with no copy here is dropped by the commit of a
        ``delete_all()`` without being loaded first (``ObjectWrite.clear``).
        """
        return self._copies_.has_copy((namespace, hex_id))

    def sql_loader(self, namespace: str, hex_id: str, fence: Fence | None) -> SqlLoader | None:
        """``None`` if this process has a current copy (or knows there is none), else a loader."""
        tag = _tag(fence, hex_id)
        key = (namespace, hex_id)
        if self._copies_.current(key, tag):
            return None
        return functools.partial(self._load_sql, key, tag)

    async def _load_sql(self, key: tuple[str, str], tag: Tag) -> None:
        copies = self._copies_
        path = copies.new_path()
        version = await self._run(functools.partial(self._fetch_sql, key, path))
        copies.install(key, tag, path if version is not None else None, version)

    def _fetch_sql(self, key: tuple[str, str], path: Path) -> int | None:
        """Write the stored database of ``key`` at ``path``; its version (``None``: none stored)."""

        def fetch(conn: psycopg.Connection[Any]) -> int | None:
            # One statement: the pages and their version come from one snapshot.
            with conn.cursor() as cursor:
                rows = cursor.stream(SQL_PAGES_QUERY, key)
                return write_sql_file(path, rows)

        return self._attempts(fetch, transaction=False)

    def sql_database(
        self, namespace: str, hex_id: str, setup: Callable[[sqlite3.Connection], None]
    ) -> sqlite3.Connection:
        """The object's local copy, opened (and created empty if none is stored).

        The copy is normally loaded before the activation was built
        (:meth:`sql_loader`). If it was not (it was discarded after a failed
        commit while the object stayed active), it is loaded here, blocking
        the event loop for one round trip and the database's transfer.

        Raises:
            StorageError: the copy cannot be loaded or opened.
        """
        key = (namespace, hex_id)
        copies = self._copies_
        if not copies.known(key):
            path = copies.new_path()
            version = self._guarded(functools.partial(self._fetch_sql, key, path))
            copies.install(key, UNVERIFIED, path if version is not None else None, version)
        return copies.connection(key, setup, UNVERIFIED)

    def sql_changes(
        self, namespace: str, hex_id: str, connection: sqlite3.Connection
    ) -> SqlPages | None:
        """The pages the object's copy committed since its last hand-over.

        Raises:
            StorageError: ``connection`` is not the copy's any more (it was
                discarded or loaded again while the batch waited).
        """
        return self._copies_.changes((namespace, hex_id), connection)


def write_sql_file(path: Path, rows: Any) -> int | None:
    """Write a database file from ``(page_size, page_count, version, page, data)`` rows.

    The rows are those of :data:`SQL_PAGES_QUERY`. Returns the database's
    version (``None``, and no file, when none is stored).

    Raises:
        StorageError: the stored pages are damaged (missing, or of the wrong size).
    """
    version: int | None = None
    expected = 1
    page_count = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            for row in rows:
                page_size, page_count, version, number, data = row
                if number is None:
                    break  # a database with no page (created empty)
                if number != expected or len(data) != page_size:
                    raise StorageError(
                        f"the stored SQL database is damaged: expected page {expected} of "
                        f"{page_size} bytes, found page {number} of {len(data)} bytes"
                    )
                file.write(data)
                expected += 1
        if version is not None and expected - 1 != page_count:
            raise StorageError(
                f"the stored SQL database is damaged: it has {expected - 1} of its "
                f"{page_count} pages"
            )
    except BaseException:
        os.unlink(path)
        raise
    if version is None:
        os.unlink(path)
        return None
    return int(version)


def _refused_shards(cursor: Cursor, writes: Sequence[ObjectWrite], fence: Fence) -> frozenset[int]:
    """The shards of ``writes`` that ``fence`` no longer holds, read (and locked) in the commit."""
    shards = sorted({shard_of(w.hex_id) for w in writes})
    # FOR SHARE: a lease round changing one of these rows waits for this
    # commit, and this commit waits for a round in progress (then reads its
    # result); the fixed order keeps concurrent commits and rounds deadlock-free.
    rows = cursor.execute(
        "SELECT shard, owner, epoch FROM _td_shards WHERE shard = ANY(%s) ORDER BY shard FOR SHARE",
        (shards,),
    ).fetchall()
    held = {
        shard
        for shard, owner, epoch in rows
        if owner == fence.member_id and epoch == fence.epochs.get(shard)
    }
    return frozenset(set(shards) - held)


def _apply(
    cursor: Cursor, writes: Sequence[ObjectWrite], unrecorded: Sequence[ObjectWrite]
) -> None:
    """Write a batch in the current transaction (the PostgreSQL twin of ``_sqlite._apply``).

    ``unrecorded``: the writes whose objects the directory may not have yet.
    """
    if not writes:
        return
    clears: list[tuple[str, str]] = []
    sql_drops: list[tuple[str, str]] = []
    deletes: list[tuple[str, str, bytes]] = []
    upserts: tuple[list[str], list[str], list[bytes], list[bytes]] = ([], [], [], [])
    alarm_rows: list[tuple[str, str, bytes | None, float, float, int]] = []
    alarm_deletes: list[tuple[str, str]] = []
    for w in writes:
        ns, hx = w.namespace, w.hex_id
        if w.clear:
            clears.append((ns, hx))
            alarm_deletes.append((ns, hx))
            if w.sql is None:
                sql_drops.append((ns, hx))
        for key, value in w.puts.items():
            if value is None:
                deletes.append((ns, hx, key.encode()))
            else:
                upserts[0].append(ns)
                upserts[1].append(hx)
                upserts[2].append(key.encode())
                upserts[3].append(value)
        if isinstance(w.alarm, AlarmRecord):
            alarm = w.alarm
            alarm_rows.append(
                (ns, hx, _bytes(w.name), alarm.time, alarm.scheduled_time, alarm.retry_count)
            )
        elif w.alarm is False:
            alarm_deletes.append((ns, hx))
    if unrecorded:
        cursor.execute(
            _RECORD_OBJECTS,
            (
                [w.namespace for w in unrecorded],
                [w.hex_id for w in unrecorded],
                [_bytes(w.name) for w in unrecorded],
            ),
        )
    if clears:
        cursor.executemany("DELETE FROM _td_kv WHERE namespace = %s AND id = %s", clears)
    if sql_drops:
        cursor.executemany("DELETE FROM _td_sql_pages WHERE namespace = %s AND id = %s", sql_drops)
        cursor.executemany(
            "DELETE FROM _td_sql_databases WHERE namespace = %s AND id = %s", sql_drops
        )
    if deletes:
        cursor.executemany(
            "DELETE FROM _td_kv WHERE namespace = %s AND id = %s AND key = %s", deletes
        )
    if upserts[0]:
        cursor.execute(
            "INSERT INTO _td_kv (namespace, id, key, value) "
            "SELECT * FROM unnest(%s::text[], %s::text[], %s::bytea[], %s::bytea[]) "
            "ON CONFLICT (namespace, id, key) DO UPDATE SET value = excluded.value",
            upserts,
        )
    if alarm_deletes:
        cursor.executemany("DELETE FROM _td_alarms WHERE namespace = %s AND id = %s", alarm_deletes)
    if alarm_rows:
        cursor.execute(
            "INSERT INTO _td_alarms (namespace, id, name, time, scheduled, retry) "
            "SELECT * FROM unnest(%s::text[], %s::text[], %s::bytea[], "
            "%s::float8[], %s::float8[], %s::int[]) "
            "ON CONFLICT (namespace, id) DO UPDATE SET "
            "name = COALESCE(excluded.name, _td_alarms.name), time = excluded.time, "
            "scheduled = excluded.scheduled, retry = excluded.retry",
            [list(column) for column in zip(*alarm_rows, strict=True)],
        )
    for w in writes:
        if w.sql is not None:
            _store_pages(cursor, w.namespace, w.hex_id, w.sql)


def _store_pages(cursor: Cursor, namespace: str, hex_id: str, changes: SqlPages) -> None:
    """Store an object's changed SQL pages, if its stored version is the one they apply to."""
    label = f"{namespace}:{hex_id[:16]}…"
    if changes.replace:
        cursor.execute(
            "DELETE FROM _td_sql_pages WHERE namespace = %s AND id = %s", (namespace, hex_id)
        )
        cursor.execute(
            "INSERT INTO _td_sql_databases (namespace, id, page_size, page_count, version) "
            "VALUES (%s, %s, %s, %s, 1) ON CONFLICT (namespace, id) DO NOTHING",
            (namespace, hex_id, changes.page_size, changes.page_count),
        )
        if cursor.rowcount != 1:
            raise StorageError(
                f"the SQL database of object {label} is already stored, but this node's copy "
                "was made without it (another node wrote it); the object will reload it"
            )
    else:
        cursor.execute(
            "UPDATE _td_sql_databases SET page_size = %s, page_count = %s, version = version + 1 "
            "WHERE namespace = %s AND id = %s AND version = %s",
            (changes.page_size, changes.page_count, namespace, hex_id, changes.base_version),
        )
        if cursor.rowcount != 1:
            raise StorageError(
                f"the stored SQL database of object {label} is not at version "
                f"{changes.base_version}, which this node's copy was made from (another node "
                "changed it); the object will reload it"
            )
        cursor.execute(
            "DELETE FROM _td_sql_pages WHERE namespace = %s AND id = %s AND page > %s",
            (namespace, hex_id, changes.page_count),
        )
    if changes.pages:
        numbers = sorted(changes.pages)
        cursor.execute(
            "INSERT INTO _td_sql_pages (namespace, id, page, data) "
            "SELECT %s, %s, * FROM unnest(%s::int[], %s::bytea[]) "
            "ON CONFLICT (namespace, id, page) DO UPDATE SET data = excluded.data",
            (namespace, hex_id, numbers, [changes.pages[n] for n in numbers]),
        )
