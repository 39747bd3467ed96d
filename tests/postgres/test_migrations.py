"""Schema migrations: versioned, idempotent, and safe when several nodes start at once."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

import trio_durable as td
from trio_durable._ids import SHARD_COUNT
from trio_durable._storage._backend import AlarmRecord, ObjectWrite
from trio_durable._storage._pg_schema import SCHEMA_VERSION, migrate
from trio_durable._storage._postgres import PostgresBackend

from ..storage.objects import OBJECTS
from .server import PostgresServer

ROOT = Path(__file__).resolve().parents[2]


def _count(url: str, query: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query.encode()).fetchone()
    assert row is not None
    return int(row[0])


def test_three_processes_migrating_at_once_all_succeed(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database("migrate")  # a database no node ever used
    start = time.time() + 1.5  # after every child has started and connected
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.postgres.migrate_child", url, repr(start)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [child.communicate(timeout=60) for child in children]
    failures = [
        err for child, (_out, err) in zip(children, results, strict=True) if child.returncode
    ]
    assert failures == [], "every process migrated without an error"
    befores = sorted(int(out.strip()) for out, _err in results)
    assert befores == [0, SCHEMA_VERSION, SCHEMA_VERSION], "one created the tables, two found them"
    assert _count(url, "SELECT count(*) FROM _td_schema") == 1, "one version row"
    assert _count(url, "SELECT count(*) FROM _td_shards") == SHARD_COUNT, "the shards once"


def test_migrating_again_changes_nothing(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        first = migrate(conn)
        second = migrate(conn)
    assert (first, second) == (0, SCHEMA_VERSION), "the second run found everything in place"
    assert _count(postgres_url, "SELECT count(*) FROM _td_shards") == SHARD_COUNT


async def test_a_database_migrated_by_a_newer_version_is_refused(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        migrate(conn)
        conn.execute("UPDATE _td_schema SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(td.StorageError, match=f"schema is version {SCHEMA_VERSION + 1}"):
        async with td.open_runtime(OBJECTS, database=postgres_url):
            pass


def _hex(shard: int, n: int) -> str:
    return f"{shard:02x}{n:062x}"


async def test_alarms_stored_before_version_2_gain_their_shard(postgres_url: str) -> None:
    ids = [_hex(shard, n) for shard in (0, 7, 0xAB, 0xFF) for n in range(2)]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        migrate(conn, up_to=1)
        conn.execute(
            "INSERT INTO _td_alarms (namespace, id, name, time, scheduled, retry) "
            "SELECT 'boxes', id, NULL, 1.0, 1.0, 0 FROM unnest(%s::text[]) AS id",
            (ids,),
        )
        assert migrate(conn) == 1, "the database was at version 1"
        # A node still running version 1 inserts alarms as before.
        ids.append(_hex(0x42, 9))
        conn.execute(
            "INSERT INTO _td_alarms (namespace, id, name, time, scheduled, retry) "
            "VALUES ('boxes', %s, NULL, 1.0, 1.0, 0)",
            (ids[-1],),
        )
        rows = conn.execute("SELECT id, shard FROM _td_alarms").fetchall()
    assert sorted(rows) == sorted((hex_id, int(hex_id[:2], 16)) for hex_id in ids)
    backend = PostgresBackend(postgres_url, exclusive=False)
    await backend.open()
    try:
        some = await backend.load_alarms({7, 0xFF})
        every = await backend.load_alarms()
    finally:
        await backend.aclose()
    assert sorted(a.hex_id for a in some) == sorted(i for i in ids if i[:2] in ("07", "ff"))
    assert len(every) == len(ids)


async def test_a_node_loads_the_alarms_of_its_shards_alone(postgres_url: str) -> None:
    backend = PostgresBackend(postgres_url, exclusive=False)
    await backend.open()
    try:
        await backend.commit(
            [
                ObjectWrite("boxes", _hex(shard, 1), f"b{shard}", alarm=AlarmRecord(5.0, 5.0, 0))
                for shard in range(0, SHARD_COUNT, 5)
            ]
        )
        loaded = await backend.load_alarms(range(10, 20))
    finally:
        await backend.aclose()
    assert sorted((int(a.hex_id[:2], 16), a.name) for a in loaded) == [
        (10, "b10"),
        (15, "b15"),
    ], "only the alarms of shards 10 to 19 (every 5th shard has one)"
