"""The runtime's tables in PostgreSQL, and the migrations that create and evolve them.

Every node runs :func:`migrate` when it starts. The migrations are a list:
the database records in ``_td_schema`` how many of them it has had, and a
node applies the ones it has not, in one transaction. The transaction first
takes a transaction-scoped advisory lock, so nodes that start at once take
turns: the first applies the migrations, the others find them applied. A
database migrated by a newer trio_durable (a version this code does not
know) is refused rather than used.

A migration is only ever appended, never edited: a database that had it
must not need it again.

Tables (every name starts with ``_td_``):

``_td_meta``
    Settings of the deployment: the ID secret.
``_td_objects``
    The object directory: every object ever activated or holding data.
``_td_kv``
    Key-value data. Keys are ``bytea`` (their UTF-8 bytes): byte order is
    the order ``list()`` promises, and a key may hold any character.
``_td_alarms``
    The alarm index, one row per object, with the object's shard (indexed:
    a node that takes shards loads only their alarms).
``_td_members``, ``_td_shards``
    Cluster membership and shard leases with epochs (fencing tokens); every
    fenced commit reads the shard rows ``FOR SHARE`` in its own transaction.
``_td_sql_databases``, ``_td_sql_pages``
    Each object's SQLite database, page by page, with a version per database.
``_td_owner``
    Which runtime may commit without a fence (a single node), see
    ``_postgres.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from .._exceptions import StorageError
from .._ids import SHARD_COUNT

if TYPE_CHECKING:
    import psycopg

__all__ = ["MIGRATIONS", "OWNER_LOCK_KEY", "SCHEMA_VERSION", "migrate"]

#: Advisory lock keys (the ASCII of "tdmigrat" and "tdowner "): one
#: serializes migrations, the other marks which runtimes use the database.
MIGRATION_LOCK_KEY: Final = 0x74646D6967726174
OWNER_LOCK_KEY: Final = 0x7464_6F77_6E65_7220

MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    # 1: everything a node needs.
    (
        "CREATE TABLE _td_meta (key text PRIMARY KEY, value bytea NOT NULL)",
        """CREATE TABLE _td_objects (
            namespace text NOT NULL,
            id text NOT NULL,
            name bytea,
            PRIMARY KEY (namespace, id)
        )""",
        """CREATE TABLE _td_kv (
            namespace text NOT NULL,
            id text NOT NULL,
            key bytea NOT NULL,
            value bytea NOT NULL,
            PRIMARY KEY (namespace, id, key)
        )""",
        """CREATE TABLE _td_alarms (
            namespace text NOT NULL,
            id text NOT NULL,
            name bytea,
            time double precision NOT NULL,
            scheduled double precision NOT NULL,
            retry integer NOT NULL,
            PRIMARY KEY (namespace, id)
        )""",
        "CREATE INDEX _td_alarms_time ON _td_alarms (time)",
        """CREATE TABLE _td_members (
            member text PRIMARY KEY,
            slot integer NOT NULL,
            address text NOT NULL,
            started double precision NOT NULL,
            heartbeat double precision NOT NULL,
            node text NOT NULL DEFAULT '',
            link text NOT NULL DEFAULT ''
        )""",
        """CREATE TABLE _td_shards (
            shard integer PRIMARY KEY,
            owner text,
            epoch bigint NOT NULL,
            expires double precision NOT NULL
        )""",
        f"""INSERT INTO _td_shards (shard, owner, epoch, expires)
            SELECT shard, NULL, 0, 0 FROM generate_series(0, {SHARD_COUNT - 1}) AS shard""",
        """CREATE TABLE _td_sql_databases (
            namespace text NOT NULL,
            id text NOT NULL,
            page_size integer NOT NULL,
            page_count integer NOT NULL,
            version bigint NOT NULL,
            PRIMARY KEY (namespace, id)
        )""",
        """CREATE TABLE _td_sql_pages (
            namespace text NOT NULL,
            id text NOT NULL,
            page integer NOT NULL,
            data bytea NOT NULL,
            PRIMARY KEY (namespace, id, page)
        )""",
        # SQLite pages compress poorly for the CPU they cost (measured in
        # docs/postgres.md): stored out of line, uncompressed.
        "ALTER TABLE _td_sql_pages ALTER COLUMN data SET STORAGE EXTERNAL",
        """CREATE TABLE _td_owner (
            only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
            token text,
            pid integer,
            host text,
            since double precision
        )""",
        "INSERT INTO _td_owner (only_row, token) VALUES (true, NULL)",
    ),
    # 2: each alarm's shard (the first byte of its object's ID), so that a
    # node taking some shards reads their alarms alone. Computed by the
    # database: nodes still running the previous version insert alarms
    # without it, and the rows of before get it too.
    (
        "ALTER TABLE _td_alarms ADD COLUMN shard integer NOT NULL "
        "GENERATED ALWAYS AS (get_byte(decode(substr(id, 1, 2), 'hex'), 0)) STORED",
        "CREATE INDEX _td_alarms_shard ON _td_alarms (shard)",
    ),
)

#: The schema version this code creates and understands.
SCHEMA_VERSION: Final = len(MIGRATIONS)


def migrate(conn: psycopg.Connection[tuple[object, ...]], up_to: int = SCHEMA_VERSION) -> int:
    """Bring the database's tables to :data:`SCHEMA_VERSION` (idempotent, concurrency-safe).

    Args:
        conn: A connection in autocommit mode; the work is one transaction.
        up_to: Stop at this version (tests make databases of earlier versions).

    Returns:
        The version the database had before (0: it was empty).

    Raises:
        StorageError: the database was migrated by a newer trio_durable.
        psycopg.Error: the database refused a statement.
    """
    with conn.transaction():
        # Nodes that start at once wait here for each other: CREATE TABLE
        # IF NOT EXISTS alone is not safe when two sessions run it together.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        conn.execute("CREATE TABLE IF NOT EXISTS _td_schema (version integer NOT NULL)")
        row = conn.execute("SELECT version FROM _td_schema").fetchone()
        before = 0 if row is None else int(str(row[0]))
        if before > SCHEMA_VERSION:
            raise StorageError(
                f"the database's trio_durable schema is version {before}, newer than this "
                f"trio_durable knows (up to {SCHEMA_VERSION}): upgrade trio_durable on this node"
            )
        for migration in MIGRATIONS[before:up_to]:
            for statement in migration:
                conn.execute(statement.encode())
        after = max(before, up_to)
        if row is None:
            conn.execute("INSERT INTO _td_schema (version) VALUES (%s)", (after,))
        elif before != after:
            conn.execute("UPDATE _td_schema SET version = %s", (after,))
    return before
