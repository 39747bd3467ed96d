"""Local copies of SQL databases: the pages handed over rebuild the database exactly.

No database server here: these check the write-ahead-log reading that a
networked backend relies on (``_storage/_sqlcopies.py``), against SQLite's
own view of the database (``Connection.serialize()``).
"""

from __future__ import annotations

import fcntl
import os
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from trio_durable import StorageError
from trio_durable._storage import _sqlcopies
from trio_durable._storage._backend import SqlPages
from trio_durable._storage._guard import install_guard
from trio_durable._storage._sqlcopies import LocalCopies, remove_abandoned

KEY = ("things", "ab" * 32)


class Stored:
    """What a backend holds: pages by number, applied as a backend applies them."""

    def __init__(self) -> None:
        self.pages: dict[int, bytes] = {}
        self.page_count = 0
        self.version: int | None = None

    def apply(self, changes: SqlPages) -> None:
        assert changes.base_version == self.version, "changes apply to the stored version"
        if changes.replace:
            self.pages = {}
        self.pages.update(changes.pages)
        self.page_count = changes.page_count
        self.pages = {n: p for n, p in self.pages.items() if n <= changes.page_count}
        self.version = 1 if changes.replace else (self.version or 0) + 1

    def image(self) -> bytes:
        return b"".join(self.pages[n] for n in range(1, self.page_count + 1))


@pytest.fixture
def copies(tmp_path: Path) -> Iterator[LocalCopies]:
    copies = LocalCopies(tmp_path / "copies", max_open=4, max_bytes=64 * 1024 * 1024)
    copies.open()
    yield copies
    copies.close()


def _commit(db: sqlite3.Connection, *statements: tuple[str, tuple[object, ...]]) -> None:
    db.execute("BEGIN")
    for query, params in statements:
        db.execute(query, params)
    db.execute("COMMIT")


def _connection(copies: LocalCopies) -> sqlite3.Connection:
    db = copies.connection(KEY, lambda db: None, None)
    return db


def test_the_first_changes_are_the_whole_database(copies: LocalCopies) -> None:
    db = _connection(copies)
    _commit(db, ("CREATE TABLE t (x)", ()), ("INSERT INTO t VALUES (1)", ()))
    changes = copies.changes(KEY, db)
    assert changes is not None, "a new database has something to hand over"
    assert changes.replace, "the first hand-over is the whole database"
    stored = Stored()
    stored.apply(changes)
    assert stored.image() == db.serialize(), "its pages are the database"


def test_later_changes_carry_only_the_pages_a_commit_wrote(copies: LocalCopies) -> None:
    db = _connection(copies)
    rows = [("INSERT INTO t VALUES (?)", (b"x" * 1000,)) for _ in range(100)]
    _commit(db, ("CREATE TABLE t (x)", ()), *rows)
    assert copies.changes(KEY, db) is not None
    _commit(db, ("UPDATE t SET x = 1 WHERE rowid = 50", ()))
    changes = copies.changes(KEY, db)
    assert changes is not None, "the update is handed over"
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    assert pages > 20, "the database spans many pages"
    assert len(changes.pages) == 1, f"{sorted(changes.pages)} of {pages} pages: only the row's page"


def test_nothing_is_handed_over_without_a_commit(copies: LocalCopies) -> None:
    db = _connection(copies)
    _commit(db, ("CREATE TABLE t (x)", ()))
    copies.changes(KEY, db)
    db.execute("BEGIN")
    db.execute("INSERT INTO t VALUES (1)")
    assert copies.changes(KEY, db) is None, "an open transaction's changes are not committed"
    db.execute("ROLLBACK")


def test_the_whole_database_leaves_out_an_open_transaction(copies: LocalCopies) -> None:
    db = _connection(copies)
    _commit(db, ("CREATE TABLE t (x)", ()), ("INSERT INTO t VALUES (1)", ()))
    committed = db.serialize()
    db.execute("BEGIN")
    db.execute("INSERT INTO t VALUES (?)", (b"y" * 50_000,))
    changes = copies.changes(KEY, db)
    assert changes is not None
    stored = Stored()
    stored.apply(changes)
    assert stored.image() == committed, "only what was committed is handed over"
    db.execute("ROLLBACK")


@pytest.mark.parametrize("seed", range(3))
def test_pages_handed_over_rebuild_the_database_through_rollbacks_and_checkpoints(
    copies: LocalCopies, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    # A small threshold: the log is folded into the file many times.
    monkeypatch.setattr(_sqlcopies, "CHECKPOINT_BYTES", 64 * 1024)
    rng = random.Random(seed)
    db = copies.connection(KEY, install_guard, None)
    db.set_authorizer(None)  # these statements are the test's, not user SQL
    _commit(db, ("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)", ()))
    stored = Stored()
    for step in range(150):
        statements: list[tuple[str, tuple[object, ...]]] = [
            ("INSERT INTO t (body) VALUES (?)", (rng.randbytes(rng.randint(10, 6000)),))
            for _ in range(rng.randint(1, 20))
        ]
        if step % 7 == 0:
            statements.append(("DELETE FROM t WHERE id % 3 = ?", (rng.randint(0, 2),)))
        if step % 11 == 0:
            # A big transaction rolled back after spilling pages into the log.
            db.execute("PRAGMA cache_size = 2")
            db.execute("BEGIN")
            for _ in range(60):
                db.execute("INSERT INTO t (body) VALUES (?)", (rng.randbytes(4000),))
            db.execute("ROLLBACK")
            db.execute("PRAGMA cache_size = -2000")
        _commit(db, *statements)
        changes = copies.changes(KEY, db)
        assert changes is not None, f"step {step}: a commit has changes"
        stored.apply(changes)
        db.set_authorizer(None)  # a checkpoint puts the guard back
        assert stored.image() == db.serialize(), f"step {step}: the stored pages are the database"


def test_a_copy_closed_for_the_open_limit_reopens_with_its_data(tmp_path: Path) -> None:
    copies = LocalCopies(tmp_path / "c", max_open=1, max_bytes=1 << 20)
    copies.open()
    first = copies.connection(KEY, lambda db: None, None)
    _commit(first, ("CREATE TABLE t (x)", ()), ("INSERT INTO t VALUES (42)", ()))
    copies.changes(KEY, first)
    other = ("things", "cd" * 32)
    copies.connection(other, lambda db: None, None)  # closes the first (limit 1)
    again = copies.connection(KEY, lambda db: None, None)
    assert again is not first, "the first copy was closed and opened again"
    assert again.execute("SELECT x FROM t").fetchall() == [(42,)], "its data is still there"
    copies.close()


def test_a_copy_with_changes_not_handed_over_stays_open(tmp_path: Path) -> None:
    copies = LocalCopies(tmp_path / "c", max_open=1, max_bytes=1 << 20)
    copies.open()
    first = copies.connection(KEY, lambda db: None, None)
    _commit(first, ("CREATE TABLE t (x)", ()))
    copies.changes(KEY, first)
    _commit(first, ("INSERT INTO t VALUES (7)", ()))  # committed, not handed over yet
    copies.connection(("things", "cd" * 32), lambda db: None, None)
    assert copies.connection(KEY, lambda db: None, None) is first, "kept open"
    changes = copies.changes(KEY, first)
    assert changes is not None, "the insert is still found in the log"
    copies.close()


def test_changes_of_a_replaced_copy_are_refused(copies: LocalCopies) -> None:
    old = _connection(copies)
    _commit(old, ("CREATE TABLE t (x)", ()))
    copies.discard(KEY)  # a failed commit, say; the object is loaded again
    _connection(copies)
    with pytest.raises(StorageError, match="was reloaded"):
        copies.changes(KEY, old)


def test_a_discarded_copy_is_gone(copies: LocalCopies) -> None:
    db = _connection(copies)
    _commit(db, ("CREATE TABLE t (x)", ()))
    copies.discard(KEY)
    assert not copies.known(KEY), "nothing is known about the object any more"
    fresh = _connection(copies)
    tables = fresh.execute("SELECT name FROM sqlite_master").fetchall()
    assert tables == [], "a new copy starts empty"


def test_the_guard_is_back_after_a_checkpoint(
    copies: LocalCopies, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_sqlcopies, "CHECKPOINT_BYTES", 1)  # fold the log after every commit
    db = copies.connection(KEY, install_guard, None)
    db.execute("CREATE TABLE t (x)")  # autocommit: a commit of its own
    copies.changes(KEY, db)
    wal = Path(str(copies._entries[KEY].path) + "-wal")  # type: ignore[union-attr]
    assert wal.stat().st_size == 0, "the checkpoint ran (and truncated the log)"
    with pytest.raises(sqlite3.DatabaseError, match="not authorized"):
        db.execute("ATTACH DATABASE ':memory:' AS other")


def test_copies_of_a_dead_process_are_removed_and_a_live_ones_kept(tmp_path: Path) -> None:
    live = LocalCopies(tmp_path / "copies-live", max_open=4, max_bytes=1 << 20)
    live.open()
    dead = tmp_path / "copies-dead"  # what kill -9 leaves: its lock is held by no one
    dead.mkdir()
    (dead / ".owner.lock").touch()
    (dead / "1.sqlite3").write_bytes(b"x")
    remove_abandoned(tmp_path, "copies-")
    assert not dead.exists(), "nobody held its lock: removed"
    assert live.directory.exists(), "its process holds the lock: kept"
    live.close()
    assert not live.directory.exists(), "a closed one removes its own directory"


def test_a_held_lock_keeps_a_directory_even_in_this_process(tmp_path: Path) -> None:
    held = tmp_path / "copies-held"
    held.mkdir()
    fd = os.open(held / ".owner.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    remove_abandoned(tmp_path, "copies-")
    os.close(fd)
    assert held.exists(), "a lock held through another open file keeps it"
