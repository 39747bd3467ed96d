"""Storage benchmark: acknowledged writes/s, reads/s, loop block per commit, alarms/s.

Run: ``python benchmarks/bench_storage.py [--objects 1000] [--writes 20]``.
Every write is acknowledged only after its commit (the RPC reply waits on
the output gate). The baseline is a plain ``sqlite3`` loop with one commit
per write, in the same WAL / ``synchronous=NORMAL`` setting, measured in the
same run. Each rate is given per second of wall time and per second of this
process's CPU time (threads included), with its ratio to the baseline's: on
a shared machine the CPU figure is the steadier one.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs
import trio

import trio_durable as td
from trio_durable._storage._sqlite import SqliteBackend
from trio_durable.testing import evict, run_in_object


@attrs.define(eq=False)
class Bench(td.DurableObject):
    async def put(self, key: str, value: Any) -> None:
        await self.ctx.storage.put(key, value)

    async def alarm(self, info: td.AlarmInfo) -> None:
        pass

    async def noop(self) -> None:
        pass


OBJECTS = {"bench": Bench}
VALUE = {"user": "someone", "score": 12345, "tags": ["a", "b", "c"]}


def baseline(path: Path, n: int) -> tuple[float, float]:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB)")
    data = b'{"user":"someone","score":12345,"tags":["a","b","c"]}'
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        db.execute("BEGIN")
        db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (f"k{i}", data))
        db.execute("COMMIT")
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    db.close()
    return n / elapsed, n / cpu


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def one_object(data_dir: Path, n: int, threaded: bool) -> tuple[float, float]:
    backend = SqliteBackend(data_dir, commit_in_thread=threaded)
    async with td.open_runtime(OBJECTS, backend=backend) as rt:
        stub = rt.namespace("bench").get_by_name("solo")
        await stub.put("warm", 0)
        start, cpu = time.perf_counter(), time.process_time()
        for i in range(n):
            await stub.put(f"k{i}", VALUE)
        return n / (time.perf_counter() - start), n / (time.process_time() - cpu)


async def many_objects(
    data_dir: Path, objects: int, writes: int, threaded: bool
) -> tuple[float, list[float], int, float]:
    backend = SqliteBackend(data_dir, commit_in_thread=threaded)
    async with td.open_runtime(OBJECTS, backend=backend) as rt:
        ns = rt.namespace("bench")
        stubs = [ns.get_by_name(f"o{i}") for i in range(objects)]
        async with trio.open_nursery() as nursery:  # warm up: activate every object
            for stub in stubs:
                nursery.start_soon(stub.put, "warm", 0)
        engine = rt.storage_engine
        engine.block_times = []
        commits_before = engine.commits

        async def writer(stub: td.Stub) -> None:
            for i in range(writes):
                await stub.put(f"k{i}", VALUE)

        start, cpu = time.perf_counter(), time.process_time()
        async with trio.open_nursery() as nursery:
            for stub in stubs:
                nursery.start_soon(writer, stub)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        n = objects * writes
        return n / elapsed, engine.block_times, engine.commits - commits_before, n / cpu


async def many_objects_inside(data_dir: Path, objects: int, writes: int) -> float:
    """Each object writes in a loop inside one event; ``sync()`` acknowledges each write."""
    async with td.open_runtime(OBJECTS, data_dir) as rt:
        ns = rt.namespace("bench")
        stubs = [ns.get_by_name(f"o{i}") for i in range(objects)]

        async def loop(obj: Any, ctx: td.ObjectContext) -> None:
            for i in range(writes):
                await ctx.storage.put(f"k{i}", VALUE)
                await ctx.storage.sync()

        async def warm(obj: Any, ctx: td.ObjectContext) -> None:
            await ctx.storage.put("warm", 0)

        async with trio.open_nursery() as nursery:
            for stub in stubs:
                nursery.start_soon(run_in_object, stub, warm)
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for stub in stubs:
                nursery.start_soon(run_in_object, stub, loop)
        return objects * writes / (time.perf_counter() - start)


async def rpc_noop(data_dir: Path, objects: int, calls: int) -> float:
    """The RPC path alone (no storage), the ceiling for one write per call."""
    async with td.open_runtime(OBJECTS, data_dir) as rt:
        ns = rt.namespace("bench")
        stubs = [ns.get_by_name(f"o{i}") for i in range(objects)]

        async def caller(stub: td.Stub) -> None:
            for _ in range(calls):
                await stub.noop()

        async with trio.open_nursery() as nursery:
            for stub in stubs:
                nursery.start_soon(caller, stub)
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for stub in stubs:
                nursery.start_soon(caller, stub)
        return objects * calls / (time.perf_counter() - start)


async def reads(data_dir: Path, n: int) -> tuple[float, float]:
    async with td.open_runtime(OBJECTS, data_dir) as rt:
        stub = rt.namespace("bench").get_by_name("reader")

        async def fill(obj: Any, ctx: td.ObjectContext) -> None:
            for start in range(0, n, 128):
                await ctx.storage.put({f"k{i:06}": VALUE for i in range(start, min(n, start + 128))})

        await run_in_object(stub, fill)
        await evict(stub)

        async def read_all(obj: Any, ctx: td.ObjectContext) -> float:
            begin = time.perf_counter()
            for i in range(n):
                await ctx.storage.get(f"k{i:06}")
            return time.perf_counter() - begin

        uncached = await run_in_object(stub, read_all)  # first pass: from SQLite
        cached = await run_in_object(stub, read_all)  # second pass: from the cache
        return n / cached, n / uncached


async def alarms(data_dir: Path, n: int) -> float:
    async with td.open_runtime(OBJECTS, data_dir) as rt:
        ns = rt.namespace("bench")
        past = rt.wall_time() + 3600  # far away while we set them

        async def arm(obj: Any, ctx: td.ObjectContext) -> None:
            await ctx.storage.set_alarm(past)

        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(run_in_object, ns.get_by_name(f"a{i}"), arm)
    # Reopen an hour later: all n alarms are due at start.
    from trio_durable._core import _clock

    real = _clock.system_time
    _clock.system_time = lambda: real() + 7200  # type: ignore[assignment]
    try:
        async with td.open_runtime(OBJECTS, data_dir) as rt:
            start = time.perf_counter()
            while rt.alarms.fired < n:  # noqa: ASYNC110 - a benchmark's progress poll
                await trio.sleep(0.01)
            await rt.storage_engine.flush()
            return n / (time.perf_counter() - start)
    finally:
        _clock.system_time = real  # type: ignore[assignment]


async def main(args: argparse.Namespace) -> None:
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows = []
        base, base_cpu = baseline(root / "b.db", 5000)
        figures.update(baseline=base, baseline_per_cpu=base_cpu)
        rows.append(("plain sqlite3, 1 commit per write (baseline)", f"{base:,.0f} writes/s; {base_cpu:,.0f} per CPU-second"))
        for threaded in (True, False):
            label = "thread" if threaded else "inline"
            rate, per_cpu = await one_object(root / f"one-{label}", 2000, threaded)
            figures.update({f"one_{label}": rate, f"one_{label}_per_cpu": per_cpu})
            rows.append((f"1 object, sequential acknowledged writes ({label} commits)",
                         f"{rate:,.0f} writes/s ({rate / base:.2f}x); {per_cpu:,.0f} per CPU-second ({per_cpu / base_cpu:.2f}x)"))
        for threaded in (True, False):
            label = "thread" if threaded else "inline"
            rate, blocks, commits, per_cpu = await many_objects(root / f"many-{label}", args.objects, args.writes, threaded)
            figures.update({f"many_{label}": rate, f"many_{label}_per_cpu": per_cpu})
            rows.append((f"{args.objects:,} objects concurrently ({label} commits)",
                         f"{rate:,.0f} writes/s ({rate / base:.2f}x), {commits:,} commits; {per_cpu:,.0f} per CPU-second ({per_cpu / base_cpu:.2f}x)"))
            rows.append((f"  loop block per commit ({label}) p50 / p99 / max",
                         f"{pct(blocks, 0.5) * 1e3:.2f} / {pct(blocks, 0.99) * 1e3:.2f} / {max(blocks) * 1e3:.2f} ms"))
        rate = await many_objects_inside(root / "inside", args.objects, args.writes)
        rows.append((f"{args.objects:,} objects, put + sync() inside the object", f"{rate:,.0f} writes/s"))
        rate = await rpc_noop(root / "noop", args.objects, args.writes)
        rows.append((f"{args.objects:,} objects, RPC with no storage (ceiling)", f"{rate:,.0f} calls/s"))
        cached, uncached = await reads(root / "reads", 20_000)
        rows.append(("reads, cached keys", f"{cached:,.0f} reads/s"))
        rows.append(("reads, uncached keys (SQLite point lookup)", f"{uncached:,.0f} reads/s"))
        rate = await alarms(root / "alarms", args.alarms)
        rows.append((f"{args.alarms:,} due alarms fired", f"{rate:,.0f} alarms/s"))
    if args.json:
        await trio.Path(args.json).write_text(json.dumps(figures, indent=2))
    width = max(len(name) for name, _ in rows)
    print(f"| {'measurement'.ljust(width)} | result |")
    print(f"| {'-' * width} | --- |")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--writes", type=int, default=20)
    parser.add_argument("--alarms", type=int, default=10_000)
    parser.add_argument("--json", help="write the write-rate figures to this file")
    trio.run(main, parser.parse_args())
