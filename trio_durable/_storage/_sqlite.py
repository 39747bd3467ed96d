"""The embedded default backend: SQLite through the standard library.

Layout (chosen by measurement, see ``docs/storage.md``):

* ``<data_dir>/trio_durable.sqlite3`` — one shared database in WAL mode with
  the runtime's own tables (names start with ``_td_``): the ID secret, the
  object directory, every object's key-value pairs and every alarm. One
  shared file lets the committer write the changes of many objects in one
  transaction (one WAL append for a thousand objects).
* ``<data_dir>/sql/<namespace>/<id>.sqlite3`` — an object's own database for
  the SQL API, created only when the object first uses ``ctx.storage.sql``.

Commits run in a worker thread (``trio.to_thread.run_sync``) so a slow disk
never stalls other objects; reads use a second, read-only connection from
the event loop (a point lookup takes microseconds, a thread hop costs more).
With ``data_dir=None`` everything lives in memory on one connection and
commits run inline.

Files are private to the user running the runtime: the data dir is created
``0700`` and every database file ``0600`` (the ID secret is in the shared
file). At open the shared file gets SQLite's ``PRAGMA quick_check``, and
its ID secret is checked against the objects it stores; a damaged file or a
lost or replaced secret is refused with a :class:`StorageError` naming the
file.

Durability: ``durability="process"`` (the default, ``synchronous=NORMAL``)
survives a crash or ``kill -9`` of the process; ``durability="power"``
(``synchronous=FULL``) also survives power loss, at the price of an fsync
per commit.
"""

from __future__ import annotations

import collections
import contextlib
import os
import secrets
import sqlite3
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Final, Literal
from urllib.parse import quote

import trio

from .._exceptions import StorageError
from .._ids import shard_of
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
from ._lock import DataDirLock
from ._secret import check_secret, missing_secret_error

__all__ = ["DATABASE_NAME", "SQL_DIR", "SqliteBackend", "sql_database_path"]

DATABASE_NAME = "trio_durable.sqlite3"
#: The directory of the objects' own SQL databases: ``sql/<namespace>/<id>.sqlite3``.
SQL_DIR = "sql"

Durability = Literal["process", "power"]

_SYNCHRONOUS: dict[str, str] = {"process": "NORMAL", "power": "FULL"}
#: A commit of at most this many rows runs inline even with ``commit_in_thread``
#: (without fsync it takes tens of microseconds, less than a thread hop).
_INLINE_COMMIT_ROWS: Final = 16

_SCHEMA = """
CREATE TABLE IF NOT EXISTS _td_meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS _td_objects (
    namespace TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT,
    PRIMARY KEY (namespace, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _td_kv (
    namespace TEXT NOT NULL,
    id TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (namespace, id, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _td_alarms (
    namespace TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT,
    time REAL NOT NULL,
    scheduled REAL NOT NULL,
    retry INTEGER NOT NULL,
    PRIMARY KEY (namespace, id)
) WITHOUT ROWID;
"""

#: A few stored objects to check the secret against: one named, one unique.
_SECRET_SAMPLE = (
    "SELECT * FROM (SELECT namespace, id, name FROM _td_objects WHERE name IS NOT NULL LIMIT 1) "
    "UNION ALL "
    "SELECT * FROM (SELECT namespace, id, name FROM _td_objects WHERE name IS NULL LIMIT 1)"
)
_HOLDS_OBJECTS = (
    "SELECT EXISTS (SELECT 1 FROM _td_objects) OR EXISTS (SELECT 1 FROM _td_kv) "
    "OR EXISTS (SELECT 1 FROM _td_alarms)"
)

_RECORD_OBJECT = (
    "INSERT INTO _td_objects (namespace, id, name) VALUES (?, ?, ?) "
    "ON CONFLICT (namespace, id) DO UPDATE SET name = COALESCE(name, excluded.name)"
)


class SqliteBackend:
    """SQLite storage in ``data_dir`` (or in memory when ``data_dir`` is ``None``).

    Args:
        data_dir: Directory of the databases (created if missing); ``None``
            keeps everything in memory.
        durability: ``"process"`` (default) survives a process crash;
            ``"power"`` also survives power loss (fsync on every commit).
        max_open_sql: How many per-object SQL databases stay open at once.
        commit_in_thread: Run commits in a worker thread. The default
            (``None``) does so for a file database, except under Trio's
            ``MockClock``: its ``autojump_clock`` treats a wait for a thread
            as idleness and would jump virtual time in the middle of a commit.
            A commit of a few rows with ``"process"`` durability runs inline
            anyway (it is cheaper than the hop to the thread).
        lock_fd: In a cluster's worker: the descriptor of the data directory's
            lock that its supervisor holds. Otherwise the backend takes the
            lock itself when it opens (a data directory has one owner: a
            second runtime on it is refused with ``StorageError`` naming
            the holder's PID).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None,
        *,
        durability: Durability = "process",
        max_open_sql: int = 256,
        commit_in_thread: bool | None = None,
        lock_fd: int | None = None,
    ) -> None:
        if durability not in _SYNCHRONOUS:
            raise ValueError(f"durability must be 'process' or 'power', got {durability!r}")
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.durability = durability
        self.max_open_sql = max_open_sql
        self.commit_in_thread = commit_in_thread
        # A cluster's worker shares its supervisor's lock of the data dir.
        self._lock_fd = lock_fd
        self._lock: DataDirLock | None = None
        self._db: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        # Commits that carry SQL changes in a cluster (see commit_with_sql).
        self._fenced: sqlite3.Connection | None = None
        self._write_lock = trio.Lock()
        self._sql: collections.OrderedDict[tuple[str, str], sqlite3.Connection] = (
            collections.OrderedDict()
        )

    @property
    def db(self) -> sqlite3.Connection:
        """The writing connection (raises if the backend is closed)."""
        if self._db is None:
            raise RuntimeError("the SQLite backend is not open")
        return self._db

    @property
    def _read_db(self) -> sqlite3.Connection:
        if self._reader is None:
            raise RuntimeError("the SQLite backend is not open")
        return self._reader

    @property
    def threaded(self) -> bool:
        """True when commits run in a worker thread (see ``commit_in_thread``)."""
        if self.data_dir is None:
            return False
        if self.commit_in_thread is not None:
            return self.commit_in_thread
        # Recognised by its autojump setting, so that production code needs no
        # import of trio.testing.
        clock = trio.lowlevel.current_clock()
        return getattr(clock, "autojump_threshold", None) is None

    def _connect(self, path: str) -> sqlite3.Connection:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        if path != ":memory:":
            db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={_SYNCHRONOUS[self.durability]}")
        return db

    async def open(self) -> None:
        """Open (creating) the database and the runtime's tables.

        Raises:
            OSError: the data dir cannot be created.
            StorageError: the database file cannot be opened, or is damaged
                (the message names the file and the cause).
        """
        if self._db is not None:
            return
        if self.data_dir is None:
            db = self._connect(":memory:")
            db.executescript(_SCHEMA)
            self._db = self._reader = db
            return
        try:
            _private_dir(self.data_dir)
        except OSError as exc:
            raise OSError(f"cannot create data_dir {str(self.data_dir)!r}: {exc}") from exc
        if self._lock_fd is not None:
            self._lock = DataDirLock.inherit(self.data_dir, self._lock_fd)
        else:
            self._lock = DataDirLock.acquire(self.data_dir)
        try:
            await self._open_files()
        except BaseException:
            self._lock.release()
            self._lock = None
            raise

    async def _open_files(self) -> None:
        assert self.data_dir is not None
        path = self.data_dir / DATABASE_NAME
        try:
            _private_file(path)
            for suffix in ("-wal", "-shm"):
                _tighten(path.with_name(path.name + suffix))
            db = self._connect(str(path))
        except (OSError, sqlite3.Error) as exc:
            cause = _cause(exc, path)
            raise StorageError(f"cannot open the data file {str(path)!r}: {cause}") from exc
        try:
            _check_integrity(db, path)
            db.executescript(_SCHEMA)
            reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            reader.execute("PRAGMA query_only=1")
        except sqlite3.Error as exc:
            db.close()
            cause = _cause(exc, path)
            raise StorageError(f"cannot open the data file {str(path)!r}: {cause}") from exc
        except BaseException:
            db.close()
            raise
        self._db, self._reader = db, reader

    async def aclose(self) -> None:
        """Close every database. Idempotent."""
        for db in self._sql.values():
            db.close()
        self._sql.clear()
        if self._fenced is not None:
            self._fenced.close()
            self._fenced = None
        if self._reader is not None and self._reader is not self._db:
            self._reader.close()
        self._reader = None
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # ----------------------------------------------------------------- writes

    async def _run_write(self, fn: Callable[[], None], *, small: bool = False) -> None:
        lock = self._write_lock
        if (small or not self.threaded) and not lock.locked():
            # Inline, and no checkpoint for a free lock: a small commit with no
            # fsync ("process" durability) costs less than the hop to a thread
            # and back, and a lone object's write should cost one commit and
            # nothing more.
            fn()
            return
        async with lock:
            if self.threaded:
                # Not abandoned on cancel: a commit always finishes or rolls back.
                await trio.to_thread.run_sync(fn)
            else:
                fn()

    def _transaction(
        self, body: Callable[[sqlite3.Connection], None], db: sqlite3.Connection | None = None
    ) -> None:
        """Run ``body`` in a write transaction on ``db`` (default: the main connection)."""
        db = self.db if db is None else db
        db.execute("BEGIN IMMEDIATE")
        try:
            body(db)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @property
    def _location(self) -> str:
        if self.data_dir is None:
            return "the in-memory database"
        return repr(str(self.data_dir / DATABASE_NAME))

    async def load_secret(self) -> bytes:
        """The ID secret, created once per data dir.

        Raises:
            StorageError: the data dir holds objects but no secret, or a secret
                they were not minted with (replaced): either would orphan them.
        """
        query = "SELECT value FROM _td_meta WHERE key = 'id_secret'"
        db = self._read_db
        row = db.execute(query).fetchone()
        if row is not None:
            secret = bytes(row[0])
            sample = [ObjectEntry(ns, hx, name) for ns, hx, name in db.execute(_SECRET_SAMPLE)]
            check_secret(secret, sample, where=self._location)
            return secret
        if db.execute(_HOLDS_OBJECTS).fetchone()[0] or self._has_sql_files():
            raise missing_secret_error(self._location)
        secret = secrets.token_bytes(32)

        def insert(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT OR IGNORE INTO _td_meta (key, value) VALUES ('id_secret', ?)", (secret,)
            )

        await self._run_write(lambda: self._transaction(insert))
        row = self._read_db.execute(query).fetchone()
        return bytes(row[0])

    async def record_objects(self, entries: Sequence[ObjectEntry]) -> None:
        """Remember objects; a name, once known, is kept."""
        if not entries:
            return
        rows = [(e.namespace, e.hex_id, e.name) for e in entries]

        def record(db: sqlite3.Connection) -> None:
            db.executemany(_RECORD_OBJECT, rows)

        await self._run_write(lambda: self._transaction(record))

    async def commit(
        self, writes: Sequence[ObjectWrite], fence: Fence | None = None
    ) -> frozenset[int]:
        """Apply a batch of many objects' writes in one transaction.

        With a ``fence``, the shard table (``_td_shards``, kept by the
        cluster's lease rounds in this same database) is read in the same
        transaction: writes of shards the fence no longer holds are left
        out and their shards returned.
        """
        if not writes:
            return frozenset()
        refused: frozenset[int] = frozenset()

        def apply(db: sqlite3.Connection) -> None:
            nonlocal refused
            accepted = writes
            if fence is not None:
                refused = _refused_shards(db, writes, fence)
                if refused:
                    accepted = [w for w in writes if shard_of(w.hex_id) not in refused]
            _apply(db, accepted)

        rows = sum(len(w.puts) for w in writes)
        small = (
            self.durability == "process"
            and rows <= _INLINE_COMMIT_ROWS
            and not any(w.clear for w in writes)
        )
        await self._run_write(lambda: self._transaction(apply), small=small)
        return refused

    def commit_with_sql(
        self,
        writes: Sequence[ObjectWrite],
        fence: Fence,
        commit_sql: Callable[[ObjectWrite], bool],
    ) -> frozenset[int]:
        """Commit a fenced batch and its objects' SQL databases, now, on the calling thread.

        In a cluster an object's SQL database is a file of its own, so its
        commit cannot join the key-value transaction. It is fenced by
        running inside it instead: this takes the shared database's write
        lock (``BEGIN IMMEDIATE``), which every lease round must take to
        change an epoch, and checks the fence; then, with the epochs frozen,
        it commits the SQL databases of the writes whose shard is still
        held (``commit_sql(write)``, which reports a failure by returning
        ``False``), applies the key-value writes of the objects whose SQL
        committed, and commits. A process that lost a shard never reaches
        the SQL commit of its objects.

        It runs synchronously (the object's SQL connection belongs to the
        event loop's thread, where its next statements run), on a connection
        of its own, so that it never waits for the threaded commit path.

        Returns:
            The refused shards, as :meth:`commit` does.

        Raises:
            sqlite3.Error: the shared database could not be written; SQL
                databases committed before the failure stay committed (as
                after a crash at that point: the batch was not acknowledged).
        """
        refused: frozenset[int] = frozenset()

        def apply(db: sqlite3.Connection) -> None:
            nonlocal refused
            refused = _refused_shards(db, writes, fence)
            accepted = [w for w in writes if shard_of(w.hex_id) not in refused and commit_sql(w)]
            _apply(db, accepted)

        self._transaction(apply, self._fenced_connection())
        return refused

    def _fenced_connection(self) -> sqlite3.Connection:
        if self._fenced is None:
            if self.data_dir is None:
                return self.db  # in memory: one connection, never used by a thread
            self._fenced = self._connect(str(self.data_dir / DATABASE_NAME))
        return self._fenced

    # ------------------------------------------------------------------ reads

    async def list_objects(self, namespace: str) -> list[ObjectEntry]:
        """Every recorded object of ``namespace``, ordered by ID."""
        rows = self._read_db.execute(
            "SELECT id, name FROM _td_objects WHERE namespace = ? ORDER BY id", (namespace,)
        ).fetchall()
        return [ObjectEntry(namespace, hex_id, name) for hex_id, name in rows]

    async def read(self, namespace: str, hex_id: str, keys: Sequence[str]) -> Mapping[str, bytes]:
        """Committed values of the keys that exist."""
        if not keys:
            return {}
        db = self._read_db
        if len(keys) == 1:
            row = db.execute(
                "SELECT value FROM _td_kv WHERE namespace = ? AND id = ? AND key = ?",
                (namespace, hex_id, keys[0]),
            ).fetchone()
            return {} if row is None else {keys[0]: row[0]}
        marks = ",".join("?" * len(keys))
        rows = db.execute(
            f"SELECT key, value FROM _td_kv WHERE namespace = ? AND id = ? AND key IN ({marks})",
            (namespace, hex_id, *keys),
        ).fetchall()
        return dict(rows)

    async def read_range(
        self, namespace: str, hex_id: str, key_range: KeyRange
    ) -> list[tuple[str, bytes]]:
        """Committed entries of one object within ``key_range``."""
        query = ["SELECT key, value FROM _td_kv WHERE namespace = ? AND id = ?"]
        params: list[object] = [namespace, hex_id]
        if key_range.start is not None:
            query.append("AND key >= ?")
            params.append(key_range.start)
        if key_range.end is not None:
            query.append("AND key < ?")
            params.append(key_range.end)
        query.append("ORDER BY key DESC" if key_range.reverse else "ORDER BY key")
        if key_range.limit is not None:
            query.append("LIMIT ?")
            params.append(key_range.limit)
        return self._read_db.execute(" ".join(query), params).fetchall()

    async def read_alarm(self, namespace: str, hex_id: str) -> AlarmRecord | None:
        """The object's committed alarm."""
        row = self._read_db.execute(
            "SELECT time, scheduled, retry FROM _td_alarms WHERE namespace = ? AND id = ?",
            (namespace, hex_id),
        ).fetchone()
        return None if row is None else AlarmRecord(row[0], row[1], row[2])

    async def load_alarms(self, shards: Collection[int] | None = None) -> list[StoredAlarm]:
        """Every stored alarm (or those of ``shards``), with the object's name when known.

        The shard is a function of the ID, not a column here: one machine's
        alarm table is read whole and filtered.
        """
        rows = self._read_db.execute(
            "SELECT a.namespace, a.id, COALESCE(a.name, o.name), a.time, a.scheduled, a.retry "
            "FROM _td_alarms a LEFT JOIN _td_objects o ON a.namespace = o.namespace AND a.id = o.id"
        ).fetchall()
        wanted = None if shards is None else frozenset(shards)
        return [
            StoredAlarm(ns, hx, name, AlarmRecord(t, s, r))
            for ns, hx, name, t, s, r in rows
            if wanted is None or shard_of(hx) in wanted
        ]

    # -------------------------------------------------------------------- sql

    def _has_sql_files(self) -> bool:
        if self.data_dir is None:
            return False
        return any((self.data_dir / SQL_DIR).glob("*/*.sqlite3"))

    def _sql_path(self, namespace: str, hex_id: str) -> Path:
        assert self.data_dir is not None
        return sql_database_path(self.data_dir, namespace, hex_id)

    def has_sql_database(self, namespace: str, hex_id: str) -> bool:
        """True if the object has used the SQL API (its database exists)."""
        if (namespace, hex_id) in self._sql:
            return True
        return self.data_dir is not None and self._sql_path(namespace, hex_id).exists()

    def sql_database(
        self, namespace: str, hex_id: str, setup: Callable[[sqlite3.Connection], None]
    ) -> sqlite3.Connection:
        """The object's own database, opened (and created) on first use.

        Raises:
            StorageError: the database cannot be opened (for example at the
                process's file descriptor limit); the message names the cause.
        """
        key = (namespace, hex_id)
        db = self._sql.get(key)
        if db is not None:
            self._sql.move_to_end(key)
            return db
        if self._db is None:
            raise RuntimeError("the SQLite backend is not open")
        if self.data_dir is None:
            db = self._connect(":memory:")  # kept until the runtime closes
        else:
            path = self._sql_path(namespace, hex_id)
            try:
                _private_dir(path.parent.parent)
                _private_dir(path.parent)
                _private_file(path)
                db = self._connect(str(path))
            except (OSError, sqlite3.Error) as exc:
                raise StorageError(
                    f"cannot open the SQL database of object {namespace}:{hex_id[:16]}… "
                    f"({str(path)!r}): {_cause(exc, path)}"
                ) from exc
            self._close_idle_sql()
        setup(db)
        self._sql[key] = db
        return db

    def sql_loader(self, namespace: str, hex_id: str, fence: Fence | None) -> SqlLoader | None:
        """Nothing to load: the database is a local file."""
        return None

    def sql_changes(
        self, namespace: str, hex_id: str, connection: sqlite3.Connection
    ) -> SqlPages | None:
        """Nothing to hand over: the local commit is the durable one."""
        return None

    def _close_idle_sql(self) -> None:
        # Keep file descriptors bounded; a database with pending writes stays open.
        excess = len(self._sql) + 1 - self.max_open_sql
        for key in list(self._sql):
            if excess <= 0:
                break
            if not self._sql[key].in_transaction:
                self._sql.pop(key).close()
                excess -= 1


def sql_database_path(data_dir: Path, namespace: str, hex_id: str) -> Path:
    """Where the SQL database of one object lives in ``data_dir``."""
    return data_dir / SQL_DIR / quote(namespace, safe="") / f"{hex_id}.sqlite3"


def _private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) with the leaf readable by its owner only.

    An existing directory is left as it is: it may be shared on purpose,
    and the files inside are private anyway.
    """
    if not path.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir(mode=0o700, exist_ok=True)


def _private_file(path: Path) -> None:
    """Create ``path`` if missing, and make it readable and writable by its owner only.

    SQLite gives the ``-wal`` and ``-shm`` files it creates the mode of the
    database file.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _tighten(path: Path) -> None:
    """Make an existing file private (files written by earlier versions were 0644)."""
    with contextlib.suppress(FileNotFoundError):
        os.chmod(path, 0o600)


def _cause(exc: BaseException, path: Path) -> str:
    """What went wrong opening ``path``, in the operating system's words when possible.

    SQLite reports only "unable to open database file"; opening the file
    ourselves tells why (too many open files, permission denied, ...).
    """
    if isinstance(exc, OSError):
        return str(exc)
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError as os_error:
        return f"{exc} ({os_error})"
    os.close(fd)
    return str(exc)


def _check_integrity(db: sqlite3.Connection, path: Path) -> None:
    """Refuse a damaged database file (``PRAGMA quick_check``)."""
    try:
        problems = [row[0] for row in db.execute("PRAGMA quick_check").fetchall()]
    except sqlite3.DatabaseError as exc:
        problems = [str(exc)]
        cause: BaseException | None = exc
    else:
        cause = None
    if problems != ["ok"]:
        shown = "; ".join(problems[:3]) + ("; ..." if len(problems) > 3 else "")
        raise StorageError(
            f"the data file {str(path)!r} failed SQLite's integrity check "
            f"(PRAGMA quick_check): {shown}; restore it from a backup"
        ) from cause


def _refused_shards(
    db: sqlite3.Connection, writes: Sequence[ObjectWrite], fence: Fence
) -> frozenset[int]:
    """The shards of ``writes`` that ``fence`` no longer holds, read in the commit's transaction."""
    shards = {shard_of(w.hex_id) for w in writes}
    marks = ",".join("?" * len(shards))
    held = {
        shard
        for shard, owner, epoch in db.execute(
            f"SELECT shard, owner, epoch FROM _td_shards WHERE shard IN ({marks})",
            tuple(shards),
        )
        if owner == fence.member_id and epoch == fence.epochs.get(shard)
    }
    return frozenset(shards - held)


def _apply(db: sqlite3.Connection, writes: Sequence[ObjectWrite]) -> None:
    objects = []
    upserts: list[tuple[str, str, str, bytes]] = []
    deletes: list[tuple[str, str, str]] = []
    alarm_sets: list[tuple[str, str, str | None, float, float, int]] = []
    alarm_deletes: list[tuple[str, str]] = []
    for w in writes:
        ns, hx = w.namespace, w.hex_id
        objects.append((ns, hx, w.name))
        if w.clear:
            db.execute("DELETE FROM _td_kv WHERE namespace = ? AND id = ?", (ns, hx))
            alarm_deletes.append((ns, hx))
        for key, value in w.puts.items():
            if value is None:
                deletes.append((ns, hx, key))
            else:
                upserts.append((ns, hx, key, value))
        if isinstance(w.alarm, AlarmRecord):
            alarm_sets.append(
                (ns, hx, w.name, w.alarm.time, w.alarm.scheduled_time, w.alarm.retry_count)
            )
        elif w.alarm is False:
            alarm_deletes.append((ns, hx))
    db.executemany(_RECORD_OBJECT, objects)
    if deletes:
        db.executemany("DELETE FROM _td_kv WHERE namespace = ? AND id = ? AND key = ?", deletes)
    if upserts:
        db.executemany(
            "INSERT OR REPLACE INTO _td_kv (namespace, id, key, value) VALUES (?, ?, ?, ?)",
            upserts,
        )
    if alarm_deletes:
        db.executemany("DELETE FROM _td_alarms WHERE namespace = ? AND id = ?", alarm_deletes)
    if alarm_sets:
        db.executemany(
            "INSERT OR REPLACE INTO _td_alarms (namespace, id, name, time, scheduled, retry) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            alarm_sets,
        )
