"""PostgreSQL benchmark: acknowledged writes/s over many objects, against one commit per write.

Run: ``python benchmarks/bench_postgres.py [--objects 1000] [--writes 20] [--url URL] [--sql]
[--rpc] [--failover] [--json FILE]``.

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

``--rpc`` starts two nodes (``trio-durable serve --database URL --node``,
one worker each, serving ``benchmarks/cluster_app.py``) and measures calls
from one object to another, one at a time: calls/s and p50/p99 latency
between objects on two nodes (over their authenticated TCP link) against
two objects in the same process, in the same run.

``--failover`` starts three nodes and kills one with ``kill -9`` (supervisor
and worker) ``--kills`` times: the time from the kill until an object the
victim ran answers a write through another node, p50 and max. The victim
is started again under its name each time (it gets its shards back). The
baseline is the lease (``--lease-seconds``, 4 s by default as in ``serve``):
the others may take its shards only once its leases lapse, which is between
a round (a quarter of the lease) before and the lease after the kill, then
take them in their next round.
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


# ------------------------------------------------------------------- nodes

CLUSTER_APP = "benchmarks.cluster_app:app"


@contextlib.contextmanager
def nodes(url: str, count: int, *extra: str) -> Iterator[list[Any]]:
    """``count`` nodes of a deployment on ``url``, started at once, stopped at the end."""
    from tests.cluster.workers import node

    with contextlib.ExitStack() as stack:
        started = [
            stack.enter_context(node(url, f"n{i}", 1, *extra, app=CLUSTER_APP, wait=False))
            for i in range(count)
        ]
        for each in started:
            each.ready(1)
        yield started


async def _get(port: int, path: str, within: float = 30) -> tuple[int, Any]:
    from tests.cluster.workers import get

    status, _, body = await get(port, path, within=within)
    return status, body


async def _counter_on(
    port: int, pids: set[int], prefix: str, avoid: frozenset[str] = frozenset()
) -> str:
    """A counter name whose object runs in one of ``pids`` (asked through ``port``)."""
    for n in range(2000):
        name = f"{prefix}-{n}"
        if name in avoid:
            continue
        status, pid = await _get(port, f"/where/{name}")
        if status == 200 and pid in pids:
            return name
    raise RuntimeError(f"no counter of processes {pids} among 2,000 names")


async def rpc_between_nodes(url: str, calls: int, repeats: int) -> dict[str, dict[str, float]]:
    """RPC from one object to another: in one process, and between two nodes (best of runs)."""
    with nodes(url, 2) as (first, second):
        here = set(first.worker_pids().values())
        there = set(second.worker_pids().values())
        caller = await _counter_on(first.port, here, "caller")
        local = await _counter_on(first.port, here, "local", frozenset({caller}))
        remote = await _counter_on(first.port, there, "remote")
        results: dict[str, list[dict[str, Any]]] = {"same process": [], "two nodes": []}
        await _get(first.port, f"/rpc/{caller}/{local}/200")  # warm up both paths
        await _get(first.port, f"/rpc/{caller}/{remote}/200")
        for _ in range(repeats):  # alternate, so both see the same machine load
            for label, callee in (("same process", local), ("two nodes", remote)):
                status, body = await _get(first.port, f"/rpc/{caller}/{callee}/{calls}", 300)
                assert status == 200, body
                results[label].append(body)
        assert results["two nodes"][0]["callee"] in there, "the remote callee ran on node 1"
    return {
        label: {
            "calls_per_second": max(r["calls_per_second"] for r in runs),
            "p50_ms": min(r["p50_ms"] for r in runs),
            "p99_ms": min(r["p99_ms"] for r in runs),
        }
        for label, runs in results.items()
    }


async def failover(url: str, kills: int, lease: float) -> list[float]:
    """Seconds from each ``kill -9`` of a node until its object answers through another node."""
    from tests.cluster.workers import node

    times: list[float] = []
    extra = ("--lease-seconds", str(lease))
    with contextlib.ExitStack() as stack:
        running = [
            stack.enter_context(node(url, f"n{i}", 1, *extra, app=CLUSTER_APP, wait=False))
            for i in range(3)
        ]
        for each in running:
            each.ready(1)
        for kill in range(kills):
            index = kill % 3
            victim = running[index]
            other = running[(index + 1) % 3]
            name = await _counter_on(other.port, set(victim.worker_pids().values()), f"v{kill}")
            status, _ = await _get(other.port, f"/hit/{name}")
            assert status == 200
            victim.kill_node()
            killed = time.perf_counter()
            while True:
                try:
                    status, _ = await _get(other.port, f"/hit/{name}", within=30)
                except (OSError, trio.TooSlowError):
                    status = 0
                if status == 200:
                    break
                if time.perf_counter() - killed > 60:
                    raise RuntimeError(f"{name} did not answer within 60 s of the kill")
                await trio.sleep(0.02)
            times.append(time.perf_counter() - killed)
            print(f"kill {kill + 1}: {times[-1]:.2f} s", file=sys.stderr)
            # Started again under its name: it takes its shards back.
            replacement = node(url, f"n{index}", 1, *extra, app=CLUSTER_APP, wait=False)
            running[index] = stack.enter_context(replacement)
            await trio.to_thread.run_sync(running[index].ready, 1)
            await trio.sleep(2 * lease)  # its shards move back before the next kill
    return times


# ------------------------------------------------------------------------ main


def print_table(rows: list[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in rows)
    print(f"| {'measurement'.ljust(width)} | result |")
    print(f"| {'-' * width} | --- |")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")


async def writes(
    args: argparse.Namespace,
    url: str,
    server: Any,
    rows: list[tuple[str, str]],
    figures: dict[str, float],
) -> None:
    """Acknowledged writes: the plain psycopg loop, one object, many objects."""
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


async def run(args: argparse.Namespace) -> dict[str, float]:
    rows: list[tuple[str, str]] = []
    figures: dict[str, float] = {}
    with database(args.url) as (url, server):
        if not args.no_writes:
            await writes(args, url, server, rows, figures)
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
        if args.rpc:
            rpc = await rpc_between_nodes(fresh(server, url, "rpc"), args.calls, 3)
            for label, figure in rpc.items():
                rows.append(
                    (
                        f"RPC between objects, {label}",
                        f"{figure['calls_per_second']:,.0f} calls/s, "
                        f"p50 {figure['p50_ms']:.2f} ms, p99 {figure['p99_ms']:.2f} ms",
                    )
                )
            ratio = rpc["two nodes"]["calls_per_second"] / rpc["same process"]["calls_per_second"]
            rows.append(("RPC between nodes / in one process", f"{ratio:.2f}x the calls/s"))
            figures.update(
                {f"rpc_{label.replace(' ', '_')}_{k}": v for label, f in rpc.items()
                 for k, v in f.items()}
            )  # fmt: skip
        if args.failover:
            times = await failover(fresh(server, url, "failover"), args.kills, args.lease_seconds)
            rows.append(
                (
                    f"failover after kill -9 of a node, {len(times)} kills, "
                    f"{args.lease_seconds:g} s leases",
                    f"p50 {statistics.median(times):.2f} s, max {max(times):.2f} s "
                    f"({statistics.median(times) / args.lease_seconds:.2f}x the lease)",
                )
            )
            figures.update(failover_p50=statistics.median(times), failover_max=max(times))
    print_table(rows)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--writes", type=int, default=20, help="writes per object")
    parser.add_argument("--baseline-writes", type=int, default=3000)
    parser.add_argument("--url", help="an existing database (emptied!) instead of a throwaway one")
    parser.add_argument("--sql", action="store_true", help="also measure SQL shipping")
    parser.add_argument("--no-writes", action="store_true", help="skip the write measurements")
    parser.add_argument("--rpc", action="store_true", help="also measure RPC between nodes")
    parser.add_argument("--calls", type=int, default=2000, help="RPC calls per run")
    parser.add_argument("--failover", action="store_true", help="also measure failover")
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--lease-seconds", type=float, default=4.0)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    figures = trio.run(run, args)
    if args.json:
        Path(args.json).write_text(json.dumps(figures))


if __name__ == "__main__":
    main()
