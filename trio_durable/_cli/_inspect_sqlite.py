"""What ``trio-durable inspect`` reads from a data directory, read-only.

:class:`SqliteSource` opens the data directory's databases with SQLite's
``mode=ro`` (and ``query_only``): it never takes the data directory's lock,
never writes, and works while a server runs on the directory (WAL readers
never block its writer; they see what was committed). It never opens a
runtime, so no object is activated or woken.

The layout it reads is the one :mod:`trio_durable._storage._sqlite` writes:
``trio_durable.sqlite3`` (tables ``_td_objects``, ``_td_kv``,
``_td_alarms``, ``_td_meta``) and ``sql/<namespace>/<id>.sqlite3``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from urllib.parse import quote, unquote

import attrs

from .._storage._sqlite import DATABASE_NAME, SQL_DIR, sql_database_path
from ._common import UsageError
from ._inspect_model import (
    AlarmView,
    Deployment,
    EntryView,
    ObjectDetail,
    ObjectView,
    TableView,
    ValueDecoder,
    find_objects,
)

__all__ = ["SqliteSource", "connect_read_only", "count_rows"]

# Objects known from any of the runtime's tables, with their sizes and names.
_OBJECTS = """
WITH ids AS (
    SELECT namespace, id FROM _td_objects
    UNION SELECT namespace, id FROM _td_kv
    UNION SELECT namespace, id FROM _td_alarms
),
kv AS (
    SELECT namespace, id, COUNT(*) AS keys,
           SUM(LENGTH(CAST(key AS BLOB)) + LENGTH(value)) AS bytes
    FROM _td_kv GROUP BY namespace, id
)
SELECT ids.namespace, ids.id, COALESCE(o.name, a.name), COALESCE(kv.keys, 0),
       COALESCE(kv.bytes, 0), a.time, a.scheduled, a.retry
FROM ids
LEFT JOIN _td_objects o ON o.namespace = ids.namespace AND o.id = ids.id
LEFT JOIN kv ON kv.namespace = ids.namespace AND kv.id = ids.id
LEFT JOIN _td_alarms a ON a.namespace = ids.namespace AND a.id = ids.id
{where}
ORDER BY ids.namespace, ids.id
"""
_USER_TABLES = (
    "SELECT name FROM sqlite_master WHERE type = 'table' "
    "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
    "AND lower(substr(name, 1, 4)) != '_td_' ORDER BY name"
)


def connect_read_only(path: Path) -> sqlite3.Connection:
    """``path`` opened read-only (``mode=ro`` and ``query_only``)."""
    db = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True)
    db.execute("PRAGMA query_only=1")
    return db


class SqliteSource:
    """The objects of one data directory, read without waking any of them.

    Args:
        data_dir: The data directory (as given to ``serve --data-dir``).
        decode: Turns a stored value into something to show.

    Raises:
        UsageError: ``data_dir`` holds no trio_durable data, or cannot be read.
    """

    def __init__(self, data_dir: str | Path, decode: ValueDecoder) -> None:
        self.data_dir = Path(data_dir)
        self._decode = decode
        path = self.data_dir / DATABASE_NAME
        if not self.data_dir.is_dir():
            raise UsageError(f"--data-dir {str(self.data_dir)!r} is not a directory")
        if not path.is_file():
            raise UsageError(f"no trio_durable data in {str(self.data_dir)!r} (no {DATABASE_NAME})")
        try:
            self._db = connect_read_only(path)
            self._db.execute("SELECT 1 FROM _td_objects LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            raise UsageError(f"cannot read {str(path)!r}: {exc}") from None

    @property
    def location(self) -> str:
        """What the output names as the source."""
        return str(self.data_dir)

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    # --------------------------------------------------------------- reading

    def deployment(self, namespace: str | None = None) -> Deployment:
        """Every namespace (or just ``namespace``) with its objects."""
        objects = self._objects(namespace=namespace)
        sql_files = self._sql_files(namespace)
        known = {(o.namespace, o.id) for o in objects}
        # An object with a SQL database but nothing in the shared file yet.
        objects += [ObjectView(ns, hex_id, None, 0, 0, None) for ns, hex_id in sql_files - known]
        objects.sort(key=lambda o: (o.namespace, o.id))
        return Deployment.of(
            self.location,
            (
                attrs.evolve(view, sql_tables=self._tables(view.namespace, view.id))
                if (view.namespace, view.id) in sql_files
                else view
                for view in objects
            ),
        )

    def find(self, ref: str) -> list[tuple[str, str, str | None]]:
        """The objects ``ref`` names (see :func:`find_objects`)."""

        def by_id(namespace: str | None, hex_id: str) -> list[tuple[str, str, str | None]]:
            found = self._objects(namespace=namespace, hex_id=hex_id)
            return [(o.namespace, o.id, o.name) for o in found]

        def by_name(namespace: str, name: str) -> str | None:
            row = self._db.execute(
                "SELECT id FROM _td_objects WHERE namespace = ? AND name = ?", (namespace, name)
            ).fetchone()
            return None if row is None else str(row[0])

        def secret() -> bytes | None:
            row = self._db.execute("SELECT value FROM _td_meta WHERE key = 'id_secret'").fetchone()
            return None if row is None else bytes(row[0])

        return find_objects(ref, by_id=by_id, by_name=by_name, secret=secret)

    def detail(
        self, namespace: str, hex_id: str, name: str | None, *, limit: int | None
    ) -> ObjectDetail:
        """One object's keys (values decoded), alarm and SQL tables."""
        found = self._objects(namespace=namespace, hex_id=hex_id)
        view = found[0] if found else ObjectView(namespace, hex_id, name, 0, 0, None)
        view = attrs.evolve(
            view, name=view.name or name, sql_tables=self._tables(namespace, hex_id)
        )
        query = "SELECT key, value FROM _td_kv WHERE namespace = ? AND id = ? ORDER BY key"
        params: tuple[object, ...] = (namespace, hex_id)
        if limit is not None:
            query += " LIMIT ?"
            params = (*params, limit)
        entries = tuple(
            EntryView(key, len(key.encode()) + len(value), *self._decode(bytes(value)))
            for key, value in self._db.execute(query, params)
        )
        return ObjectDetail(view, entries)

    # -------------------------------------------------------------- helpers

    def _objects(
        self, *, namespace: str | None = None, hex_id: str | None = None
    ) -> list[ObjectView]:
        conditions, params = [], []
        if namespace is not None:
            conditions.append("ids.namespace = ?")
            params.append(namespace)
        if hex_id is not None:
            conditions.append("ids.id = ?")
            params.append(hex_id)
        where = "WHERE " + " AND ".join(conditions) if conditions else ""
        rows = self._db.execute(_OBJECTS.format(where=where), params).fetchall()
        return [
            ObjectView(
                ns,
                hx,
                name,
                keys,
                size,
                None if time is None else AlarmView(time, scheduled, retry),
            )
            for ns, hx, name, keys, size, time, scheduled, retry in rows
        ]

    def _sql_files(self, namespace: str | None) -> set[tuple[str, str]]:
        root = self.data_dir / SQL_DIR
        if not root.is_dir():
            return set()
        found = set()
        for path in root.glob("*/*.sqlite3"):
            ns = unquote(path.parent.name)
            if namespace is None or ns == namespace:
                found.add((ns, path.stem))
        return found

    def _tables(self, namespace: str, hex_id: str) -> tuple[TableView, ...]:
        path = sql_database_path(self.data_dir, namespace, hex_id)
        if not path.is_file():
            return ()
        try:
            with closing(connect_read_only(path)) as db:
                return tuple(count_rows(db))
        except sqlite3.Error as exc:
            return (TableView(f"(unreadable: {exc})", None),)


def count_rows(db: sqlite3.Connection) -> Iterator[TableView]:
    """Each user table of ``db`` with its row count (``None`` when it cannot be counted)."""
    for (name,) in db.execute(_USER_TABLES).fetchall():
        quoted = '"' + name.replace('"', '""') + '"'
        try:
            (rows,) = db.execute(f"SELECT COUNT(*) FROM {quoted}").fetchone()
        except sqlite3.Error:  # a virtual table whose module this Python lacks
            rows = None
        yield TableView(name, rows)
