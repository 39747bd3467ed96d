"""Local copies of objects' SQL databases, for a backend that stores them elsewhere.

The SQL API is synchronous and speaks SQLite, so an object's SQL database
is always a local SQLite file; with a networked backend it is a *copy* of
the database the backend stores. This module keeps those copies for one
process (the backend does the network part):

* each copy is a file in WAL mode with exclusive locking (no shared memory),
  no fsync (the durable version is the backend's) and no automatic
  checkpoint, so every local commit appends the pages it changed to the
  write-ahead log and nothing else moves them;
* after a local commit, :meth:`LocalCopies.changes` reads the frames the log
  gained since the last call, up to its last commit frame, and returns the
  pages they carry (:class:`~._backend.SqlPages`); the backend stores them
  in the same transaction as the object's key-value writes. The first time
  (a new database, or one the backend dropped) it returns the whole database;
* a copy is *tagged* with the fence it was made or last stored under (a
  cluster member and the shard's epoch; ``None`` for a process that needs
  no fence), and counts as current only under the same tag: another member
  may have changed the database while this one did not hold the shard;
* a commit that failed or was refused leaves the copy ahead of what is
  stored, so it is *discarded*: the next activation loads it again;
* the copies of a process live in a directory of their own, holding an
  ``flock`` for the process's life: a process killed with ``kill -9``
  cannot remove its directory, and the next one that starts removes every
  directory whose lock nobody holds (:func:`remove_abandoned`).

The write-ahead log's format is SQLite's documented file format
(https://www.sqlite.org/fileformat2.html#walformat): a 32-byte header with
the page size and two salts, then frames of a 24-byte header (page number,
the database's size in pages on a commit frame, the salts) and one page.
Frames after the last commit frame are not committed (a rolled back
transaction that spilled pages) and frames whose salts differ are from an
earlier use of the file; both are ignored.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import itertools
import logging
import os
import shutil
import sqlite3
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Final

import attrs

from .._exceptions import StorageError
from ._backend import SqlPages

__all__ = ["UNVERIFIED", "LocalCopies", "Tag", "remove_abandoned"]

logger: Final = logging.getLogger("trio_durable")

#: Who may have changed the stored database: ``(member, epoch)``, or ``None``
#: for a process that commits without a fence (it is the only writer).
Tag = tuple[str, int] | None
#: The tag of a copy loaded without knowing the fence: never current again.
UNVERIFIED: Final[Tag] = ("", -1)

ObjectKey = tuple[str, str]

_WAL_HEADER: Final = 32
_FRAME_HEADER: Final = 24
_WAL_MAGIC: Final = (0x377F0682, 0x377F0683)
_DEFAULT_PAGE_SIZE: Final = 4096
#: The log is folded into the database file once it passes this size.
CHECKPOINT_BYTES: Final = 4 * 1024 * 1024
#: How many "this object has no SQL database" marks are remembered.
MAX_ABSENT_MARKS: Final = 65_536
#: The lock file in a directory of copies, held while its process lives.
_LOCK_NAME: Final = ".owner.lock"


def remove_abandoned(parent: Path, prefix: str) -> None:
    """Remove the directories of copies ``parent/prefix*`` that no live process holds."""
    for directory in parent.glob(prefix + "*"):
        lock = directory / _LOCK_NAME
        try:
            fd = os.open(lock, os.O_RDWR)
        except OSError:
            continue  # not ours, or being created right now
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # its process lives
        finally:
            os.close(fd)  # drops our lock too
        shutil.rmtree(directory, ignore_errors=True)


class _WalReader:
    """Reads what a copy's write-ahead log gained since the last read."""

    __slots__ = ("offset", "path", "salt")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.salt: tuple[int, int] | None = None
        self.offset = _WAL_HEADER

    def reset(self) -> None:
        """Forget the position (the log file was removed, the connection reopened)."""
        self.salt = None
        self.offset = _WAL_HEADER

    def read(
        self, *, from_start: bool = False, advance: bool = True
    ) -> tuple[int, int, dict[int, bytes]] | None:
        """Committed pages after the last read: ``(page size, pages in the database, pages)``.

        ``None`` when no commit frame followed. ``from_start`` reads every
        committed frame of the log; ``advance=False`` leaves the position.
        """
        try:
            with open(self.path, "rb") as file:
                header = file.read(_WAL_HEADER)
                if len(header) < _WAL_HEADER:
                    return None
                magic, _format, page_size, _seq, salt1, salt2, _c1, _c2 = struct.unpack(
                    ">8I", header
                )
                if magic not in _WAL_MAGIC:
                    raise StorageError(f"{str(self.path)!r} is not an SQLite write-ahead log")
                salt = (salt1, salt2)
                offset = self.offset
                if from_start or salt != self.salt:
                    offset = _WAL_HEADER
                file.seek(offset)
                data = file.read()
        except FileNotFoundError:
            return None
        frame = _FRAME_HEADER + page_size
        pending: dict[int, bytes] = {}
        pages: dict[int, bytes] = {}
        database_pages = 0
        end = 0
        for position in range(0, len(data) - frame + 1, frame):
            page, commit, frame_salt1, frame_salt2 = struct.unpack_from(">4I", data, position)
            if (frame_salt1, frame_salt2) != salt:
                break  # left from an earlier use of the file
            pending[page] = data[position + _FRAME_HEADER : position + frame]
            if commit:
                pages.update(pending)
                pending.clear()
                database_pages = commit
                end = position + frame
        if advance:
            self.salt = salt
            self.offset = offset + end
        if not end:
            return None
        return page_size, database_pages, pages


@attrs.define(eq=False)
class _Copy:
    """One object's local copy."""

    path: Path
    tag: Tag
    #: The stored version this copy will match once every change handed over is
    #: stored (``None``: nothing stored; the next hand-over is the whole database).
    version: int | None
    setup: Callable[[sqlite3.Connection], None] | None = None
    connection: sqlite3.Connection | None = None
    wal: _WalReader = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.wal = _WalReader(self.path.with_name(self.path.name + "-wal"))


@attrs.frozen
class _Absent:
    """The object has no stored SQL database (as known under ``tag``)."""

    tag: Tag


class LocalCopies:
    """This process's copies of objects' SQL databases (see the module docstring).

    Args:
        directory: Where the files go (created ``0700``; removed by :meth:`close`).
        max_open: How many copies stay open at once (the others reopen on use).
        max_bytes: The largest a database may grow (``PRAGMA max_page_count``).
    """

    def __init__(self, directory: Path, *, max_open: int, max_bytes: int) -> None:
        self.directory = directory
        self.max_open = max_open
        self.max_bytes = max_bytes
        self._entries: dict[ObjectKey, _Copy | _Absent] = {}
        self._absent: collections.OrderedDict[ObjectKey, None] = collections.OrderedDict()
        self._open: collections.OrderedDict[ObjectKey, None] = collections.OrderedDict()
        self._retired: list[sqlite3.Connection] = []
        self._names = itertools.count(1)
        self._lock_fd: int | None = None

    def open(self) -> None:
        """Create the directory, private to this user, holding its lock.

        It is made under another name and renamed once locked, so that
        :func:`remove_abandoned` in another process never sees it unlocked.
        """
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        staging = self.directory.with_name(f".{self.directory.name}.new")
        staging.mkdir(mode=0o700)
        fd = os.open(staging / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)  # a fresh directory: nobody else has it
        os.rename(staging, self.directory)
        self._lock_fd = fd

    def close(self) -> None:
        """Close every copy and remove the directory. Idempotent."""
        for entry in self._entries.values():
            if isinstance(entry, _Copy) and entry.connection is not None:
                entry.connection.close()
        self._entries.clear()
        self._absent.clear()
        self._open.clear()
        self.sweep()
        shutil.rmtree(self.directory, ignore_errors=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def sweep(self) -> None:
        """Close the connections of discarded copies (nothing uses them any more)."""
        retired, self._retired = self._retired, []
        for connection in retired:
            connection.close()

    # ----------------------------------------------------------- what is here

    def current(self, key: ObjectKey, tag: Tag) -> bool:
        """True if this process knows the object's database (or its absence) under ``tag``."""
        entry = self._entries.get(key)
        return entry is not None and entry.tag == tag

    def known(self, key: ObjectKey) -> bool:
        """True if there is a copy or an absence mark, whatever its tag."""
        return key in self._entries

    def has_copy(self, key: ObjectKey) -> bool:
        """True if the object has a local copy (its SQL database exists)."""
        return isinstance(self._entries.get(key), _Copy)

    def new_path(self) -> Path:
        """A fresh file name in the directory (for a restore)."""
        return self.directory / f"{next(self._names)}.sqlite3"

    def install(self, key: ObjectKey, tag: Tag, path: Path | None, version: int | None) -> None:
        """Record what a load found: a database written at ``path``, or none (``path=None``)."""
        self.discard(key)
        if path is None:
            self._entries[key] = _Absent(tag)
            self._absent[key] = None
            while len(self._absent) > MAX_ABSENT_MARKS:
                self._entries.pop(self._absent.popitem(last=False)[0], None)
        else:
            self._entries[key] = _Copy(path, tag, version)

    def discard(self, key: ObjectKey) -> None:
        """Forget the object's copy (it may be ahead of what is stored): the next use loads it."""
        entry = self._entries.pop(key, None)
        self._absent.pop(key, None)
        self._open.pop(key, None)
        if isinstance(entry, _Copy):
            if entry.connection is not None:
                # Still referenced by the failed batch, which rolls it back:
                # closed at the next sweep.
                self._retired.append(entry.connection)
            for suffix in ("", "-wal", "-journal"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(str(entry.path) + suffix)

    def stored_elsewhere(self, key: ObjectKey) -> None:
        """The backend dropped the stored database: the next hand-over is the whole copy."""
        entry = self._entries.get(key)
        if isinstance(entry, _Copy):
            entry.version = None

    def retag(self, key: ObjectKey, tag: Tag) -> None:
        """The copy was stored under ``tag`` (a commit succeeded)."""
        entry = self._entries.get(key)
        if isinstance(entry, _Copy):
            entry.tag = tag

    # ------------------------------------------------------------- the files

    def connection(
        self, key: ObjectKey, setup: Callable[[sqlite3.Connection], None], tag: Tag
    ) -> sqlite3.Connection:
        """The object's open copy, created empty if it has none (``tag`` for a new one).

        Raises:
            StorageError: the file cannot be opened (the message says why).
        """
        entry = self._entries.get(key)
        if not isinstance(entry, _Copy):
            self._absent.pop(key, None)
            entry = _Copy(self.new_path(), entry.tag if entry is not None else tag, None)
            self._entries[key] = entry
        entry.setup = setup
        if entry.connection is not None:
            self._open.move_to_end(key)
            return entry.connection
        self._close_idle()
        try:
            fd = os.open(entry.path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            connection = sqlite3.connect(entry.path, isolation_level=None, check_same_thread=False)
            # Exclusive before WAL: the log's index then lives in this
            # process's memory (no -shm file). No fsync: this is a copy.
            connection.execute("PRAGMA locking_mode=EXCLUSIVE")
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=OFF")
            connection.execute("PRAGMA wal_autocheckpoint=0")
            page_size = int(connection.execute("PRAGMA page_size").fetchone()[0])
            connection.execute(f"PRAGMA max_page_count={max(1, self.max_bytes // page_size)}")
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(
                f"cannot open the local copy of the SQL database of object "
                f"{key[0]}:{key[1][:16]}… ({str(entry.path)!r}): {exc}"
            ) from exc
        setup(connection)
        entry.wal.reset()
        entry.connection = connection
        self._open[key] = None
        return connection

    def _close_idle(self) -> None:
        # Keep descriptors bounded. A copy with changes not yet handed over
        # stays open: closing folds its log into the file, and the changes
        # would no longer be found in it.
        excess = len(self._open) + 1 - self.max_open
        for key in list(self._open):
            if excess <= 0:
                break
            entry = self._entries[key]
            assert isinstance(entry, _Copy)
            assert entry.connection is not None
            if entry.connection.in_transaction or entry.wal.read(advance=False) is not None:
                continue
            entry.connection.close()
            entry.connection = None
            del self._open[key]
            excess -= 1

    def changes(self, key: ObjectKey, connection: sqlite3.Connection) -> SqlPages | None:
        """The pages ``connection`` committed since the last call (the whole database at first).

        Raises:
            StorageError: ``connection`` is no longer the object's copy (it was
                discarded or replaced: what it committed cannot be stored), or
                the log or the file cannot be read.
        """
        entry = self._entries.get(key)
        if not isinstance(entry, _Copy) or entry.connection is not connection:
            raise StorageError(
                f"the SQL database of object {key[0]}:{key[1][:16]}… was reloaded while "
                "changes made on the previous copy waited for their commit; they are dropped"
            )
        try:
            if entry.version is None:
                changes = self._whole(entry)
                entry.version = 1
            else:
                read = entry.wal.read()
                if read is None:
                    return None
                page_size, page_count, pages = read
                changes = SqlPages(page_size, page_count, pages, entry.version)
                entry.version += 1
            self._checkpoint(entry)
        except OSError as exc:
            raise StorageError(
                f"cannot read the local copy of the SQL database of object "
                f"{key[0]}:{key[1][:16]}…: {exc}"
            ) from exc
        return changes

    def _whole(self, entry: _Copy) -> SqlPages:
        """The committed database: the file with every committed frame of the log laid over it.

        Read from the files rather than with ``serialize()``, which would
        include the changes of a transaction still open.
        """
        main = entry.path.read_bytes()
        page_size = _DEFAULT_PAGE_SIZE
        if len(main) >= 100:
            raw = int.from_bytes(main[16:18], "big")
            page_size = 65536 if raw == 1 else raw
        page_count = len(main) // page_size
        logged: dict[int, bytes] = {}
        read = entry.wal.read(from_start=True)
        if read is not None:
            page_size, page_count, logged = read
        pages = {
            number: main[(number - 1) * page_size : number * page_size]
            for number in range(1, page_count + 1)
            if number not in logged
        }
        pages.update(logged)
        return SqlPages(page_size, page_count, pages, None)

    def _checkpoint(self, entry: _Copy) -> None:
        """Fold a long log into the file (its pages are handed over already)."""
        connection = entry.connection
        if connection is None or entry.wal.offset < CHECKPOINT_BYTES:
            return
        if connection.in_transaction:
            return  # an open transaction block: next time
        connection.set_authorizer(None)  # the runtime's own statement, never user text
        try:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            if entry.setup is not None:
                entry.setup(connection)  # the guard again; cached statements expire
