"""The write buffer and the runtime-wide committer (the output gate's other half).

A write lands at once in the object's cache and in its *batch*: the object's
uncommitted changes. A batch has one
:class:`~trio_durable._core._gates.PendingCommit`, registered on the object's
output gate by the batch's first write, so replies and messages that follow
wait for the commit.

One committer task per runtime turns batches into backend commits. A new
batch wakes it; it runs once the writing task has stopped at an await, and
takes every batch whose object's input gate is open: the object's code went
on to something other than storage (``await put(a); await put(b)``, writes
with no other await between them, keep the gate, so they land in the same
commit). A batch whose gate is still held is taken as soon as the gate opens
(the gate tells the committer), or at once when someone waits for its
commit (a ``sync()``, or a reply inside ``block_concurrency_while``). The
ready batches of *every* object go into one backend transaction, and while
it runs new writes pile up for the next one: under load a commit carries
thousands of writes, which is how the runtime acknowledges far more writes
per second than SQLite can commit transactions. A lone object's write costs
one commit and no polling.

A failed commit resolves the held commits with the error (their messages are
dropped), resets every object in the batch and drops their later buffered
writes too. Committed data is never touched.

An object's SQL changes are committed with its batch. In a cluster on a
backend that keeps them in local files (:class:`FencedSqlCommits`), the SQL
commits run inside the backend's fenced transaction, so a process that lost
the object's shard cannot commit its SQL either.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import time
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import attrs
import trio

from .._core._gates import PendingCommit, note_write
from .._exceptions import CommitFailedError, StorageError
from .._ids import shard_of
from ._backend import AlarmRecord, Backend, Fence, ObjectWrite
from ._cache import MISSING
from ._guard import install_guard

if TYPE_CHECKING:
    from .._core._live import LiveObject
    from ._sqldb import ObjectDatabase

__all__ = ["MISSING", "Batch", "FencedSqlCommits", "StorageEngine"]

logger = logging.getLogger("trio_durable")

#: Times the committer may find a batch's gate held before committing it anyway.
MAX_COALESCE_ROUNDS = 32

ObjectKey = tuple[str, str]


@attrs.define(eq=False, slots=True)
class Batch:
    """One object's changes not yet handed to the backend.

    Attributes:
        write: The changes.
        commit: What the output gates of its writers wait for.
        record: The activation that wrote last (its input gate decides).
        earlier: Older activations of the same ID whose writes are here too.
    """

    write: ObjectWrite
    commit: PendingCommit
    record: LiveObject
    earlier: list[LiveObject] | None = None
    sql: ObjectDatabase | None = None
    rounds: int = 0

    def records(self) -> list[LiveObject]:
        """Every activation whose writes this batch carries."""
        return [*(self.earlier or ()), self.record]


@runtime_checkable
class FencedSqlCommits(Protocol):
    """A backend whose objects' SQL databases are local files, committed in place.

    Such a commit cannot be part of the backend's transaction, so the
    backend runs it inside that transaction, after the fence check (see
    ``SqliteBackend.commit_with_sql``).
    """

    def commit_with_sql(
        self,
        writes: Sequence[ObjectWrite],
        fence: Fence,
        commit_sql: Callable[[ObjectWrite], bool],
    ) -> frozenset[int]:
        """Commit ``writes`` under ``fence``, calling ``commit_sql`` for each one still held."""


class StorageEngine:
    """Buffers every object's writes and commits them in batches (one per runtime)."""

    def __init__(self, backend: Backend, *, max_value_bytes: int) -> None:
        self.backend = backend
        self.max_value_bytes = max_value_bytes
        #: Installs the SQL guard on an object's database, with user SQL's
        #: length limit at ``max_value_bytes``.
        self.sql_guard: Callable[[sqlite3.Connection], None] = functools.partial(
            install_guard, max_value_bytes=max_value_bytes
        )
        # The backend again, when it commits local SQL files inside its fenced
        # transaction (checked once: the protocol check is slow).
        self._fenced_sql: FencedSqlCommits | None = (
            backend if isinstance(backend, FencedSqlCommits) else None
        )
        self.dirty: dict[ObjectKey, Batch] = {}
        self.inflight: dict[ObjectKey, Batch] = {}
        # The committer task while it waits for work (see _kick).
        self._parked: trio.lowlevel.Task | None = None
        #: Called with each successful commit's writes (the alarm scheduler listens).
        self.commit_listeners: list[Callable[[Sequence[ObjectWrite]], None]] = []
        #: In a cluster: the shards (and epochs) this process holds, proved by
        #: every commit. ``None`` in a single process: nothing is checked.
        self.fence: Callable[[], Fence | None] | None = None
        #: When a list, the loop-thread seconds spent per commit are appended (benchmarks).
        self.block_times: list[float] | None = None
        #: Successful commits, and the real seconds their backend calls took.
        self.commits = 0
        self.commit_seconds = 0.0
        self.objects_committed = 0

    # ------------------------------------------------------------- buffering

    def batch_for(self, record: LiveObject) -> Batch:
        """The open batch of ``record``'s object, holding its output gate."""
        batch = self.dirty.get(record.key)
        if batch is None:
            oid = record.object_id
            commit = PendingCommit(self._kick)
            batch = Batch(ObjectWrite(oid.namespace, oid.hex, oid.name), commit, record)
            self.dirty[record.key] = batch
            record.output_gate.hold(commit)
            self._kick()
        else:
            if batch.record is not record:
                # A new activation writes before the old one's batch committed.
                if batch.earlier is None:
                    batch.earlier = []
                batch.earlier.append(batch.record)
                batch.record = record
                record.output_gate.hold(batch.commit)
            if batch.write.name is None and record.object_id.name is not None:
                batch.write.name = record.object_id.name
        # The event that writes learns which commit carries it (a WebSocket
        # whose message's writes are lost is closed with 1011).
        note_write(batch.commit)
        return batch

    def overlays(self, key: ObjectKey) -> list[ObjectWrite]:
        """The object's uncommitted writes, oldest first."""
        result = []
        inflight = self.inflight.get(key)
        if inflight is not None:
            result.append(inflight.write)
        dirty = self.dirty.get(key)
        if dirty is not None:
            result.append(dirty.write)
        return result

    def pending_value(self, key: ObjectKey, name: str) -> bytes | None:
        """An uncommitted value (``None``: deleted), or :data:`MISSING`."""
        for batch in (self.dirty.get(key), self.inflight.get(key)):
            if batch is None:
                continue
            write = batch.write
            if name in write.puts:
                return write.puts[name]
            if write.clear:
                return None
        return MISSING  # type: ignore[no-any-return]

    def pending_alarm(self, key: ObjectKey) -> AlarmRecord | None:
        """An uncommitted alarm change (``None``: deleted), or :data:`MISSING`."""
        for batch in (self.dirty.get(key), self.inflight.get(key)):
            if batch is None:
                continue
            write = batch.write
            if isinstance(write.alarm, AlarmRecord):
                return write.alarm
            if write.alarm is False or write.clear:
                return None
        return MISSING  # type: ignore[no-any-return]

    # -------------------------------------------------------------- commits

    def _kick(self) -> None:
        """Something changed (a new batch, a gate opened, a waiter): look again."""
        task = self._parked
        if task is not None:
            self._parked = None
            trio.lowlevel.reschedule(task)

    async def run(self) -> None:
        """The committer task: commit ready batches until cancelled."""
        task = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            self._parked = None
            return trio.lowlevel.Abort.SUCCEEDED

        while True:
            ready = self._take_ready()
            if ready:
                await self._commit(ready)
                continue
            # Nothing to commit now: wait for a new batch, an opened gate or
            # a waiter (each calls _kick).
            self._parked = task
            await trio.lowlevel.wait_task_rescheduled(abort)

    def _take_ready(self) -> dict[ObjectKey, Batch]:
        # Runs only while every other task is stopped at an await: an open
        # gate means the object's code left its storage calls, so the batch
        # is complete.
        ready = {}
        for key, batch in self.dirty.items():
            gate = batch.record.input_gate
            if not gate.is_held or batch.commit.waited or batch.rounds >= MAX_COALESCE_ROUNDS:
                ready[key] = batch
            else:
                batch.rounds += 1
                gate.on_open = self._kick
        for key in ready:
            del self.dirty[key]
        return ready

    async def settle(self, keys: Collection[ObjectKey]) -> None:
        """Wait until no write of these objects is buffered or being committed.

        (An object whose commit failed has been reset: its writes are gone.)
        """
        wanted = set(keys)
        while wanted & (self.dirty.keys() | self.inflight.keys()):
            for key in wanted & self.dirty.keys():
                self.dirty[key].rounds = MAX_COALESCE_ROUNDS  # now, held gate or not
            self._kick()
            await trio.sleep(0.001)

    async def flush(self) -> None:
        """Commit everything buffered now (used when the runtime closes)."""
        while self.dirty:
            ready, self.dirty = self.dirty, {}
            await self._commit(ready)

    async def _commit(self, ready: dict[ObjectKey, Batch]) -> None:
        started = time.perf_counter()
        fence = self.current_fence()
        # In a cluster, local SQL files are committed inside the fenced
        # transaction (see commit_with_sql), not before it.
        sql_in_transaction = (
            fence is not None
            and self._fenced_sql is not None
            and any(batch.sql is not None for batch in ready.values())
        )
        writes = []
        for key, batch in list(ready.items()):
            if fence is not None and shard_of(key[1]) not in fence.epochs:
                # This process no longer holds the object's shard: nothing of
                # the batch may reach the disk, its SQL part included.
                del ready[key]
                self._fail(batch, _not_held(key))
                continue
            if batch.sql is not None and not sql_in_transaction and not self._commit_sql(batch):
                del ready[key]
                continue
            writes.append(batch.write)
            self.inflight[key] = batch
        blocked = time.perf_counter() - started
        begun = time.perf_counter()
        sql_failed: dict[ObjectKey, Exception] = {}
        try:
            if sql_in_transaction:
                assert fence is not None
                refused = self._commit_with_sql(ready, writes, fence, sql_failed)
            else:
                refused = await self.backend.commit(writes, fence)
        except Exception as exc:
            logger.error("storage commit of %d object(s) failed", len(writes), exc_info=exc)
            for batch in ready.values():
                self._fail(batch, exc)
            return
        finally:
            for key in ready:
                self.inflight.pop(key, None)
        for key, error in sql_failed.items():
            logger.error("SQL commit of %s failed", key[1], exc_info=error)
            self._fail(ready.pop(key), error)
        if sql_failed:
            writes = [w for w in writes if (w.namespace, w.hex_id) not in sql_failed]
        if refused:
            for key in [key for key in ready if shard_of(key[1]) in refused]:
                self._fail(ready.pop(key), _not_held(key))
            writes = [w for w in writes if shard_of(w.hex_id) not in refused]
        started = time.perf_counter()
        self.commit_seconds += started - begun
        self.commits += 1
        self.objects_committed += len(writes)
        for batch in ready.values():
            batch.commit.resolve()
        for listener in self.commit_listeners:
            listener(writes)
        if self.block_times is not None:
            self.block_times.append(blocked + time.perf_counter() - started)

    def commit_sql_now(self, record: LiveObject, db: ObjectDatabase) -> None:
        """Commit ``db``'s pending statements at once, ahead of the object's batch.

        A ``storage.transaction()`` block that begins while statements of the
        same event are pending needs them committed first (its savepoint
        must never hold back their commit). In a cluster on local SQL files
        this commit is fenced like a batch's: it is made only while this
        process still holds the object's shard.

        Raises:
            StorageError: this process no longer holds the object's shard:
                nothing was committed, and the object is reset as after a
                refused batch.
        """
        fence = self.current_fence()
        backend = self._fenced_sql
        if fence is None or backend is None:
            db.commit()
            return
        oid = record.object_id
        key = (oid.namespace, oid.hex)
        failed: list[Exception] = []

        def commit_sql(write: ObjectWrite) -> bool:
            try:
                db.commit()
            except Exception as exc:
                failed.append(exc)
                return False
            return True

        write = ObjectWrite(oid.namespace, oid.hex, oid.name)
        refused = shard_of(oid.hex) not in fence.epochs or bool(
            backend.commit_with_sql([write], fence, commit_sql)
        )
        error = _not_held(key) if refused else (failed[0] if failed else None)
        if error is None:
            return
        batch = self.dirty.get(key)
        if batch is not None:
            self._fail(batch, error)
        raise error

    def current_fence(self) -> Fence | None:
        """The shards (and epochs) this process holds now; ``None`` in a single process."""
        return self.fence() if self.fence is not None else None

    def _commit_with_sql(
        self,
        ready: dict[ObjectKey, Batch],
        writes: list[ObjectWrite],
        fence: Fence,
        failed: dict[ObjectKey, Exception],
    ) -> frozenset[int]:
        """Commit on the loop's thread, SQL files inside the fenced transaction.

        Synchronous from the batches' capture to their SQL commit: no
        statement of the objects' next events can slip into this commit.
        The objects whose SQL commit failed are put in ``failed`` (failed by
        the caller, once the transaction is over).
        """
        backend = self._fenced_sql
        assert backend is not None

        def commit_sql(write: ObjectWrite) -> bool:
            key = (write.namespace, write.hex_id)
            try:
                self._commit_sql_file(ready[key])
            except Exception as exc:
                failed[key] = exc
                return False
            return True

        return backend.commit_with_sql(writes, fence, commit_sql)

    def _commit_sql_file(self, batch: Batch) -> None:
        """Commit the batch's local SQL changes, if it has any (raises on failure)."""
        db = batch.sql
        if db is None:
            return
        write = batch.write
        db.commit()
        # A backend that stores SQL remotely gets the pages this local
        # commit wrote, to store in the same transaction as the rest.
        write.sql = self.backend.sql_changes(write.namespace, write.hex_id, db.connection)

    def _commit_sql(self, batch: Batch) -> bool:
        try:
            self._commit_sql_file(batch)
        except Exception as exc:
            logger.error("SQL commit of %s failed", batch.write.hex_id, exc_info=exc)
            self._fail(batch, exc)
            return False
        return True

    def _fail(self, batch: Batch, exc: BaseException) -> None:
        """Drop a batch (and the object's later writes) and reset its objects."""
        batches = [batch]
        later = self.dirty.pop((batch.write.namespace, batch.write.hex_id), None)
        if later is not None:
            batches.append(later)
        error = CommitFailedError(f"a storage commit failed: {exc!r}")
        error.__cause__ = exc
        for dropped in batches:
            if dropped.sql is not None:
                try:
                    dropped.sql.rollback()
                except Exception:  # the database is already unusable; the reset suffices
                    logger.exception("SQL rollback failed")
            dropped.commit.resolve(error)
            for record in dropped.records():
                record.reset(error, origin="commit")


def _not_held(key: ObjectKey) -> StorageError:
    return StorageError(
        f"this process no longer holds the shard of object {key[0]}:{key[1][:16]}…; "
        "its writes were refused (another process owns it now)"
    )
