"""PostgreSQL benchmark: acknowledged writes/s over many objects, against one commit per write.

Run: ``python benchmarks/bench_postgres.py [--objects 1000] [--writes 20] [--url URL] [--sql]
[--json FILE]``.

Without ``--url`` it starts a throwaway PostgreSQL server (Debian's
``postgresql`` package, ``tests/postgres/server.py``) with its default,
durable settings (``fsync=on``, ``synchronous_commit=on``) and removes it at
the end. Every write is acknowledged only after its COMMIT (the RPC reply
waits on the output gate). In the same run, the baseline is a plain psycopg
loop doing one INSERT and one COMMIT per write on one connection. The target
is 3x (the storage engine's group commit: one transaction for the ready
writes of every object).

``--sql`` adds the measurement behind the SQL shipping scheme
(``docs/postgres.md``): the cost of one small commit to an object's SQLite
database shipped whole (``serialize()``) against its changed pages, and of
loading it on another node, for several database sizes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import psycopg
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trio_durable as td
from trio_durable._storage._backend import ObjectWrite
from trio_durable._storage._postgres import PostgresBackend


@attrs.define(eq=False)
class Bench(td.DurableObject):
    async def put(self, key: str, value: Any) -> None:
        await self.ctx.storage.put(key, value)


OBJECTS = {"bench": Bench}
VALUE = {"user": "someone", "score": 12345, "tags": ["a", "b", "c"]}
DATA = b'{"user":"someone","score":12345,"tags":["a","b","c"]}'


@contextlib.contextmanager
def database(url: str | None) -> Iterator[tuple[str, Any]]:
    """``(url, server)``: the given database, or a throwaway server's (``server`` is None then)."""
    if url is not None:
        yield url, None
        return
    from tests.postgres.server import running_server

    with running_server() as server:
        yield server.url(), server


def fresh(server: Any, url: str, prefix: str) -> str:
    """A new empty database on the throwaway server (or ``url`` itself, emptied)."""
    if server is not None:
        return str(server.create_database(prefix))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    return url


def baseline(url: str, n: int) -> float:
    """One INSERT and one COMMIT per write, on one connection (psycopg, synchronous)."""
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE kv (key text PRIMARY KEY, value bytea NOT NULL)")
        conn.commit()
        start = time.perf_counter()
        for i in range(n):
            conn.execute(
                "INSERT INTO kv VALUES (%s, %s) ON CONFLICT (key) DO UPDATE "
                "SET value = excluded.value",
                (f"k{i}", DATA),
            )
            conn.commit()
        return n / (time.perf_counter() - start)


async def many_objects(url: str, objects: int, writes: int) -> tuple[float, int, float]:
    """Acknowledged writes/s of ``objects`` objects writing concurrently; commits; writes/commit."""
    async with td.open_runtime(OBJECTS, database=url) as runtime:
        ns = runtime.namespace("bench")
        stubs = [ns.get_by_name(f"o{i}") for i in range(objects)]
        async with trio.open_nursery() as nursery:  # warm up: activate and record every object
            for stub in stubs:
                nursery.start_soon(stub.put, "warm", 0)
        engine = runtime.storage_engine
        commits, committed = engine.commits, engine.objects_committed

        async def writer(stub: td.Stub) -> None:
            for i in range(writes):
                await stub.put(f"k{i}", VALUE)

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for stub in stubs:
                nursery.start_soon(writer, stub)
        elapsed = time.perf_counter() - start
        made = engine.commits - commits
        return objects * writes / elapsed, made, (engine.objects_committed - committed) / made


async def one_object(url: str, n: int) -> float:
    """Sequential acknowledged writes of one object: one PostgreSQL commit each."""
    async with td.open_runtime(OBJECTS, database=url) as runtime:
        stub = runtime.namespace("bench").get_by_name("solo")
        start = time.perf_counter()
        for i in range(n):
            await stub.put(f"k{i}", VALUE)
        return n / (time.perf_counter() - start)


# ----------------------------------------------------------------- SQL shipping


def _sqlite_of(size: int, path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO t (body) VALUES (?)", [(os.urandom(500).hex(),) for _ in range(size // 1100)]
    )
    db.execute("COMMIT")
    return db


def ship_whole(url: str, size: int, commits: int) -> float:
    """Median ms of a small commit shipped as the whole database (``serialize()``)."""
    with tempfile.TemporaryDirectory() as tmp, psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS whole (id int PRIMARY KEY, data bytea)")
        conn.execute("ALTER TABLE whole ALTER COLUMN data SET STORAGE EXTERNAL")
        db = _sqlite_of(size, Path(tmp) / "x.db")
        times = []
        for i in range(commits):
            start = time.perf_counter()
            db.execute("INSERT INTO t (body) VALUES (?)", (f"note {i}",))
            with conn.transaction():
                conn.execute(
                    "INSERT INTO whole VALUES (1, %s) ON CONFLICT (id) DO UPDATE "
                    "SET data = excluded.data",
                    (db.serialize(),),
                )
            times.append(time.perf_counter() - start)
        db.close()
        return statistics.median(times) * 1e3


async def ship_pages(url: str, size: int, commits: int) -> tuple[float, float, int]:
    """Median ms of a small commit shipped as changed pages; ms to load it; pages per commit."""
    backend = PostgresBackend(url, exclusive=False)
    await backend.open()
    hex_id = "00" * 32
    try:
        db = backend.sql_database("bench", hex_id, lambda db: None)
        db.execute("BEGIN")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
        db.executemany(
            "INSERT INTO t (body) VALUES (?)",
            [(os.urandom(500).hex(),) for _ in range(size // 1100)],
        )
        db.execute("COMMIT")
        first = ObjectWrite("bench", hex_id, None, sql=backend.sql_changes("bench", hex_id, db))
        await backend.commit([first])
        times, pages = [], []
        for i in range(commits):
            start = time.perf_counter()
            db.execute("BEGIN")
            db.execute("INSERT INTO t (body) VALUES (?)", (f"note {i}",))
            db.execute("COMMIT")
            changes = backend.sql_changes("bench", hex_id, db)
            assert changes is not None
            pages.append(len(changes.pages))
            await backend.commit([ObjectWrite("bench", hex_id, None, sql=changes)])
            times.append(time.perf_counter() - start)
    finally:
        await backend.aclose()
    other = PostgresBackend(url, exclusive=False)  # another node: no copy yet
    await other.open()
    try:
        loader = other.sql_loader("bench", hex_id, None)
        assert loader is not None
        start = time.perf_counter()
        await loader()
        load_ms = (time.perf_counter() - start) * 1e3
    finally:
        await other.aclose()
    return statistics.median(times) * 1e3, load_ms, round(statistics.median(pages))


# ------------------------------------------------------------------------ main


def print_table(rows: list[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in rows)
    print(f"| {'measurement'.ljust(width)} | result |")
    print(f"| {'-' * width} | --- |")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")


async def run(args: argparse.Namespace) -> dict[str, float]:
    rows: list[tuple[str, str]] = []
    figures: dict[str, float] = {}
    with database(args.url) as (url, server):
        base = baseline(fresh(server, url, "baseline"), args.baseline_writes)
        rows.append(("plain psycopg loop, 1 commit per write (baseline)", f"{base:,.0f} writes/s"))
        rate = await one_object(fresh(server, url, "one"), args.baseline_writes)
        rows.append(("1 object, sequential acknowledged writes", f"{rate:,.0f} writes/s"))
        figures["one_object"] = rate
        rate, commits, per_commit = await many_objects(
            fresh(server, url, "many"), args.objects, args.writes
        )
        figures.update(baseline=base, many_objects=rate, objects=args.objects)
        rows.append(
            (
                f"{args.objects:,} objects x {args.writes} writes, concurrently",
                f"{rate:,.0f} writes/s ({rate / base:.1f}x the baseline; target 3x), "
                f"{commits:,} commits of {per_commit:,.0f} objects on average",
            )
        )
        if args.sql:
            for size in (64 * 1024, 1024 * 1024, 16 * 1024 * 1024, 64 * 1024 * 1024):
                label = f"{size // 1024:,} KiB"
                if size <= 16 * 1024 * 1024:  # past it, seconds per commit
                    whole = ship_whole(fresh(server, url, "whole"), size, 10)
                    rows.append(
                        (f"SQL {label}: small commit, whole database shipped", f"{whole:.2f} ms")
                    )
                pages_ms, load_ms, pages = await ship_pages(fresh(server, url, "pages"), size, 10)
                rows.append(
                    (
                        f"SQL {label}: small commit, changed pages shipped",
                        f"{pages_ms:.2f} ms ({pages} page(s))",
                    )
                )
                rows.append((f"SQL {label}: load on another node", f"{load_ms:.1f} ms"))
    print_table(rows)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--writes", type=int, default=20, help="writes per object")
    parser.add_argument("--baseline-writes", type=int, default=3000)
    parser.add_argument("--url", help="an existing database (emptied!) instead of a throwaway one")
    parser.add_argument("--sql", action="store_true", help="also measure SQL shipping")
    parser.add_argument("--json", help="also write the write rates to this file")
    args = parser.parse_args()
    figures = trio.run(run, args)
    if args.json:
        Path(args.json).write_text(json.dumps(figures))


if __name__ == "__main__":
    main()
