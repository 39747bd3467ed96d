"""The one seam between the runtime and durable storage.

Everything the runtime persists goes through a :class:`Backend`. The
embedded default is :class:`~trio_durable._storage._sqlite.SqliteBackend`; a
PostgreSQL backend for several nodes will implement the same protocol. So no
caller may assume a local file, a single process, or synchronous access: every
method that touches data is async and may do network I/O.

Writes reach the backend only through :meth:`Backend.commit`, one call per
batch of many objects' writes, applied all or nothing. Reads never see
uncommitted data; the storage engine overlays its own pending writes.

An object's SQL database is SQLite on every backend (the SQL API is
synchronous and keeps SQLite's dialect). An embedded backend keeps it in a
local file and its local commit is the durable one. A networked backend
keeps a local copy: after each local commit it hands the storage engine the
changed pages (:meth:`Backend.sql_changes`), which travel in the object's
:class:`ObjectWrite` and are stored in the same transaction as its
key-value writes; before an activation is built the runtime awaits
:meth:`Backend.sql_loader`, which restores the copy from the backend when
this process has none that is current.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

import attrs

if TYPE_CHECKING:
    import sqlite3

__all__ = [
    "AlarmRecord",
    "Backend",
    "Fence",
    "KeyRange",
    "ObjectEntry",
    "ObjectWrite",
    "SqlLoader",
    "SqlPages",
    "StoredAlarm",
]


@attrs.frozen
class ObjectEntry:
    """One object the backend knows about: it was activated or holds data."""

    namespace: str
    hex_id: str
    name: str | None = None


@attrs.frozen
class AlarmRecord:
    """An object's one alarm as stored.

    Attributes:
        time: When it runs next (epoch seconds); a retry moves it.
        scheduled_time: The time the user asked for (``AlarmInfo.scheduled_time``).
        retry_count: Failed attempts so far.
    """

    time: float
    scheduled_time: float
    retry_count: int = 0


@attrs.frozen
class StoredAlarm:
    """An alarm with the object it belongs to (what the scheduler loads)."""

    namespace: str
    hex_id: str
    name: str | None
    alarm: AlarmRecord


@attrs.frozen
class KeyRange:
    """A ``list()`` query in backend terms: ``[start, end)``, ordered by key bytes."""

    start: str | None = None
    end: str | None = None
    reverse: bool = False
    limit: int | None = None


@attrs.frozen
class SqlPages:
    """What an object's SQL database changed, for a backend that stores it remotely.

    SQLite's database file is a sequence of pages; these are the pages one
    local commit (or several) wrote, taken from the write-ahead log.

    Attributes:
        page_size: Bytes per page.
        page_count: The database's length in pages afterwards (pages past
            it are gone).
        pages: Page number (from 1) → its new content.
        base_version: The stored version these pages apply to; ``None``:
            ``pages`` is the whole database and nothing may be stored yet.
    """

    page_size: int
    page_count: int
    pages: Mapping[int, bytes]
    base_version: int | None

    @property
    def replace(self) -> bool:
        """True when ``pages`` is the whole database (the first store of it)."""
        return self.base_version is None


@attrs.define(eq=False, slots=True)
class ObjectWrite:
    """What one object changed since its last commit.

    Attributes:
        clear: Delete every key of the object, its alarm, and its SQL
            database unless ``sql`` is given, *before* ``puts``.
        puts: Key → serialized value; ``None`` deletes the key.
        alarm: ``None`` leaves the alarm alone, ``False`` deletes it, a record sets it.
        sql: The SQL database's changes to store with the rest (a backend
            that keeps it remotely; ``None`` otherwise or when unchanged).
    """

    namespace: str
    hex_id: str
    name: str | None
    clear: bool = False
    puts: dict[str, bytes | None] = attrs.field(factory=dict)
    alarm: AlarmRecord | bool | None = None
    sql: SqlPages | None = None


@attrs.frozen
class Fence:
    """What a commit proves in a cluster: this member holds these shards at these epochs.

    A backend applies a write only if, in the same transaction, its
    object's shard is still held by ``member_id`` at the epoch given here
    (a fencing token): a process that lost a shard can never commit for it.
    """

    member_id: str
    epochs: Mapping[int, int]


#: Loads an object's SQL database into this process (see :meth:`Backend.sql_loader`).
SqlLoader = Callable[[], Awaitable[None]]


class Backend(Protocol):
    """What the runtime needs from durable storage."""

    async def open(self) -> None:
        """Connect and create the runtime's own tables if missing."""

    async def aclose(self) -> None:
        """Flush and disconnect. Idempotent."""

    async def load_secret(self) -> bytes:
        """The deployment's ID secret, created on first use and then never changed.

        A backend that holds objects but no secret, or a secret that did not
        mint them, raises ``StorageError`` rather than start (a new secret
        would orphan every object): ``_secret.check_secret`` does the check.
        """

    async def record_objects(self, entries: Sequence[ObjectEntry]) -> None:
        """Remember that these objects exist (idempotent; names are kept)."""

    async def list_objects(self, namespace: str) -> list[ObjectEntry]:
        """Every object ever recorded in ``namespace``, ordered by ID."""

    async def commit(
        self, writes: Sequence[ObjectWrite], fence: Fence | None = None
    ) -> frozenset[int]:
        """Apply every write, all or nothing, durably; record the objects as existing.

        With a ``fence``, writes whose shard the fence no longer holds (checked
        in the same transaction) are left out; their shards are returned, and
        the rest is applied. Without one, nothing is checked and the result is
        empty.

        Cancellation must not leave a half-applied batch (an embedded backend
        finishes the commit; a networked one rolls back).
        """

    async def read(self, namespace: str, hex_id: str, keys: Sequence[str]) -> Mapping[str, bytes]:
        """The committed values of those keys that exist."""

    async def read_range(
        self, namespace: str, hex_id: str, key_range: KeyRange
    ) -> list[tuple[str, bytes]]:
        """Committed entries in ``key_range``, in key order (reversed if asked)."""

    async def read_alarm(self, namespace: str, hex_id: str) -> AlarmRecord | None:
        """The object's committed alarm, if any."""

    async def load_alarms(self, shards: Collection[int] | None = None) -> list[StoredAlarm]:
        """Every stored alarm, or those of objects in ``shards`` (``shard_of`` their ID).

        A single process loads them all once at start; a cluster member
        loads those of the shards it has just taken.
        """

    def has_sql_database(self, namespace: str, hex_id: str) -> bool:
        """True if the object's SQL database exists (``delete_all`` empties it)."""

    def sql_database(
        self, namespace: str, hex_id: str, setup: Callable[[sqlite3.Connection], None]
    ) -> sqlite3.Connection:
        """The object's own SQLite database for the synchronous SQL API.

        Created on first use, when ``setup`` is called on it once. Backends
        without a local SQL database raise ``NotImplementedError``.
        """

    def sql_loader(self, namespace: str, hex_id: str, fence: Fence | None) -> SqlLoader | None:
        """What must run before an activation of the object is built, if anything.

        ``None`` when its SQL database is ready here (an embedded backend, or a
        local copy known to be current under ``fence``). Otherwise an async
        function that the runtime awaits, before the constructor runs, to
        bring the database here (the constructor may use the synchronous SQL
        API); it raises ``StorageError`` when it cannot.
        """

    def sql_changes(
        self, namespace: str, hex_id: str, connection: sqlite3.Connection
    ) -> SqlPages | None:
        """The object's SQL changes committed locally on ``connection``, not yet handed over.

        The storage engine calls it right after committing the object's SQL
        transaction and puts the result in the object's :class:`ObjectWrite`.
        ``None`` when the local commit is already durable (an embedded backend)
        or nothing changed. Raises ``StorageError`` when ``connection`` is no
        longer the object's database here (it was reloaded meanwhile): its
        changes cannot be stored, and the batch must fail.
        """
