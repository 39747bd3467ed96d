"""What ``trio-durable inspect --database URL`` reads from PostgreSQL, read-only.

:class:`PostgresSource` reads the tables :mod:`trio_durable._storage._pg_schema`
defines, in one ``READ ONLY`` transaction at ``REPEATABLE READ``: every
figure comes from one snapshot of what the nodes have committed, nothing is
written, no lock is taken that a node could wait for (readers never block
writers in PostgreSQL), and no runtime is opened, so no object is
activated or woken. An object's SQL database is fetched into a temporary
file, read and removed, to list its tables and count their rows.
"""

from __future__ import annotations

import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path
from typing import Any

import attrs
import psycopg
from psycopg import conninfo

from .._exceptions import StorageError
from .._storage._postgres import SQL_PAGES_QUERY, check_database_url, write_sql_file
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
from ._inspect_sqlite import count_rows

__all__ = ["PostgresSource"]

#: Seconds to wait for the connection.
CONNECT_TIMEOUT = 10

# Objects known from any of the runtime's tables, with their sizes and names.
_OBJECTS = """
WITH ids AS (
    SELECT namespace, id FROM _td_objects
    UNION SELECT namespace, id FROM _td_kv
    UNION SELECT namespace, id FROM _td_alarms
    UNION SELECT namespace, id FROM _td_sql_databases
),
kv AS (
    SELECT namespace, id, count(*) AS keys,
           sum(octet_length(key) + octet_length(value)) AS bytes
    FROM _td_kv GROUP BY namespace, id
)
SELECT ids.namespace, ids.id, COALESCE(o.name, a.name), COALESCE(kv.keys, 0),
       COALESCE(kv.bytes, 0), a.time, a.scheduled, a.retry, d.id IS NOT NULL
FROM ids
LEFT JOIN _td_objects o ON o.namespace = ids.namespace AND o.id = ids.id
LEFT JOIN kv ON kv.namespace = ids.namespace AND kv.id = ids.id
LEFT JOIN _td_alarms a ON a.namespace = ids.namespace AND a.id = ids.id
LEFT JOIN _td_sql_databases d ON d.namespace = ids.namespace AND d.id = ids.id
{where}
ORDER BY ids.namespace COLLATE "C", ids.id COLLATE "C"
"""


def _read_only_options(url: str) -> str:
    """The URL's own ``options``, plus read-only transactions for the whole session."""
    given = str(conninfo.conninfo_to_dict(url).get("options") or "")
    return f"{given} -c default_transaction_read_only=on".strip()


class PostgresSource:
    """The objects of a deployment's PostgreSQL database, read without waking any of them.

    Args:
        url: The database's ``postgresql://`` URL (the one the nodes use).
        decode: Turns a stored value into something to show.

    Raises:
        UsageError: a bad URL, a database that cannot be reached, or one
            that holds no trio_durable data.
    """

    def __init__(self, url: str, decode: ValueDecoder) -> None:
        try:
            self._where = check_database_url(url)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"--database: {exc}") from None
        self._decode = decode
        try:
            self._conn: psycopg.Connection[Any] = psycopg.connect(
                url,
                options=_read_only_options(url),
                application_name="trio_durable inspect",
                connect_timeout=CONNECT_TIMEOUT,
            )
        except psycopg.Error as exc:
            raise UsageError(f"cannot connect to the database {self._where}: {exc}") from None
        try:
            # One snapshot for every query (the transaction starts with the first).
            self._conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            self._conn.read_only = True
            row = self._conn.execute("SELECT to_regclass('_td_schema') IS NOT NULL").fetchone()
            if row is None or not row[0]:
                raise UsageError(f"no trio_durable data in the database {self._where}")
        except psycopg.Error as exc:
            self._conn.close()
            raise UsageError(f"cannot read the database {self._where}: {exc}") from None
        except BaseException:
            self._conn.close()
            raise

    @property
    def location(self) -> str:
        """What the output names as the source: the URL without its password."""
        return self._where

    def close(self) -> None:
        """End the transaction (it wrote nothing) and close the connection."""
        self._conn.close()

    # --------------------------------------------------------------- reading

    def deployment(self, namespace: str | None = None) -> Deployment:
        """Every namespace (or just ``namespace``) with its objects."""
        return Deployment.of(
            self.location,
            (
                attrs.evolve(view, sql_tables=self._tables(view.namespace, view.id))
                if has_sql
                else view
                for view, has_sql in self._objects(namespace=namespace)
            ),
        )

    def find(self, ref: str) -> list[tuple[str, str, str | None]]:
        """The objects ``ref`` names (see :func:`find_objects`)."""

        def by_id(namespace: str | None, hex_id: str) -> list[tuple[str, str, str | None]]:
            found = self._objects(namespace=namespace, hex_id=hex_id)
            return [(v.namespace, v.id, v.name) for v, _ in found]

        def by_name(namespace: str, name: str) -> str | None:
            row = self._conn.execute(
                "SELECT id FROM _td_objects WHERE namespace = %s AND name = %s",
                (namespace, name.encode()),
            ).fetchone()
            return None if row is None else str(row[0])

        def secret() -> bytes | None:
            query = "SELECT value FROM _td_meta WHERE key = 'id_secret'"
            row = self._conn.execute(query).fetchone()
            return None if row is None else bytes(row[0])

        return find_objects(ref, by_id=by_id, by_name=by_name, secret=secret)

    def detail(
        self, namespace: str, hex_id: str, name: str | None, *, limit: int | None
    ) -> ObjectDetail:
        """One object's keys (values decoded), alarm and SQL tables."""
        found = self._objects(namespace=namespace, hex_id=hex_id)
        if found:
            view, has_sql = found[0]
        else:
            view, has_sql = ObjectView(namespace, hex_id, name, 0, 0, None), False
        view = attrs.evolve(
            view,
            name=view.name or name,
            sql_tables=self._tables(namespace, hex_id) if has_sql else (),
        )
        query = "SELECT key, value FROM _td_kv WHERE namespace = %s AND id = %s ORDER BY key"
        params: tuple[object, ...] = (namespace, hex_id)
        if limit is not None:
            query += " LIMIT %s"
            params = (*params, limit)
        entries = tuple(
            EntryView(
                bytes(key).decode(errors="replace"),
                len(key) + len(value),
                *self._decode(bytes(value)),
            )
            for key, value in self._conn.execute(query.encode(), params).fetchall()
        )
        return ObjectDetail(view, entries)

    # -------------------------------------------------------------- helpers

    def _objects(
        self, *, namespace: str | None = None, hex_id: str | None = None
    ) -> list[tuple[ObjectView, bool]]:
        conditions, params = [], []
        if namespace is not None:
            conditions.append("ids.namespace = %s")
            params.append(namespace)
        if hex_id is not None:
            conditions.append("ids.id = %s")
            params.append(hex_id)
        where = "WHERE " + " AND ".join(conditions) if conditions else ""
        rows = self._conn.execute(_OBJECTS.format(where=where).encode(), params).fetchall()
        return [
            (
                ObjectView(
                    ns,
                    hx,
                    None if name is None else bytes(name).decode(errors="replace"),
                    int(keys),
                    int(size),
                    None if time is None else AlarmView(time, scheduled, retry),
                ),
                bool(has_sql),
            )
            for ns, hx, name, keys, size, time, scheduled, retry, has_sql in rows
        ]

    def _tables(self, namespace: str, hex_id: str) -> tuple[TableView, ...]:
        """The tables of the object's stored SQL database, fetched into a temporary file."""
        with tempfile.TemporaryDirectory(prefix="td-inspect-") as tmp:
            path = Path(tmp) / "copy.sqlite3"
            try:
                with self._conn.cursor() as cursor:
                    version = write_sql_file(
                        path, cursor.stream(SQL_PAGES_QUERY, (namespace, hex_id))
                    )
                if version is None:
                    return ()
                # A private copy, removed below: opened as is (a read-only
                # open of a database in WAL mode would need its -shm file).
                with closing(sqlite3.connect(path)) as db:
                    return tuple(count_rows(db))
            except (StorageError, OSError, sqlite3.Error) as exc:
                return (TableView(f"(unreadable: {exc})", None),)
