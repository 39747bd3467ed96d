"""Storage benchmark: acknowledged writes/s, reads/s, loop block per commit, alarms/s.

Run: ``python benchmarks/bench_storage.py [--objects 1000] [--writes 20]``.
Every write is acknowledged only after its commit (the RPC reply waits on
the output gate). The baseline is a plain ``sqlite3`` loop with one commit
per write, in the same WAL / ``synchronous=NORMAL`` setting, measured in the
same run (at the start and at the end: the ratios use the mean, and both
are printed so a drift of the machine shows). Each rate is given per second
of wall time and per second of this process's CPU time (threads included),
with its ratio to the baseline's: on a shared machine the CPU figure is the
steadier one.

The write rates are measured with ``open_runtime(tune_gc=False)`` (a library
embedded in another program) and ``tune_gc=True`` (what ``trio-durable
serve`` does), each with the time the garbage collector took per write.
Then one run of the 1,000-object writes (inline commits, so that all the
work is on the profiled thread) under ``cProfile``, its time grouped by
where it goes: the RPC, the gates, the value codec, the key-value put, the
write engine, SQLite, Trio's scheduler. Profiling slows Python calls more
than C calls, so the groups are given as shares of the profiled time and,
scaled by those shares, as microseconds of the unprofiled CPU per write.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import pstats
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
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


class CollectorClock:
    """CPU time of the collecting thread in the garbage collector while installed.

    Measured with ``time.thread_time`` between the ``gc.callbacks`` start and
    stop calls, so a loaded machine does not inflate it.
    """

    def __init__(self) -> None:
        self.total = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.thread_time()
        else:
            self.total += time.thread_time() - self._started

    @contextmanager
    def installed(self) -> Iterator[None]:
        gc.callbacks.append(self)
        try:
            yield
        finally:
            gc.callbacks.remove(self)


async def one_object(
    data_dir: Path, n: int, threaded: bool, tune_gc: bool = False
) -> tuple[float, float]:
    backend = SqliteBackend(data_dir, commit_in_thread=threaded)
    async with td.open_runtime(OBJECTS, backend=backend, tune_gc=tune_gc) as rt:
        stub = rt.namespace("bench").get_by_name("solo")
        await stub.put("warm", 0)
        start, cpu = time.perf_counter(), time.process_time()
        for i in range(n):
            await stub.put(f"k{i}", VALUE)
        return n / (time.perf_counter() - start), n / (time.process_time() - cpu)


async def many_objects(
    data_dir: Path,
    objects: int,
    writes: int,
    threaded: bool,
    tune_gc: bool = False,
    profiler: cProfile.Profile | None = None,
) -> dict[str, Any]:
    backend = SqliteBackend(data_dir, commit_in_thread=threaded)
    async with td.open_runtime(OBJECTS, backend=backend, tune_gc=tune_gc) as rt:
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

        clock = CollectorClock()
        with clock.installed():
            if profiler is not None:
                profiler.enable()
            start, cpu = time.perf_counter(), time.process_time()
            async with trio.open_nursery() as nursery:
                for stub in stubs:
                    nursery.start_soon(writer, stub)
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
            if profiler is not None:
                profiler.disable()
        n = objects * writes
        return {
            "rate": n / elapsed,
            "per_cpu": n / cpu,
            "blocks": engine.block_times,
            "commits": engine.commits - commits_before,
            "gc_us_per_write": clock.total / n * 1e6,
        }


#: Where CPU goes, by the file (or the attrs-generated class) of the function
#: that spends it; the first group that matches wins.
PROFILE_GROUPS: list[tuple[str, tuple[str, ...]]] = [
    (
        "RPC: stub, dispatch, live object, event",
        (
            "trio_durable/_stubs.py",
            "trio_durable._stubs",
            "trio_durable/_core/_live.py",
            "trio_durable._core._live",
            "trio_durable/_core/_registry.py",
            "trio_durable/_core/_budget.py",
            "trio_durable/_object.py",
            "bench_storage.py",
        ),
    ),
    (
        "input and output gates",
        (
            "trio_durable/_core/_gates.py",
            "trio_durable._core._gates",
            "trio_durable/_storage/_gate.py",
        ),
    ),
    (
        "value codec (RPC copy of the arguments, encoding in put)",
        ("trio_durable/_codec.py", "trio_durable/_storage/_values.py", "msgpack"),
    ),
    (
        "write engine (batches, write records, commit scheduling)",
        (
            "trio_durable/_storage/_engine.py",
            "trio_durable._storage._engine",
            "trio_durable._storage._backend",
        ),
    ),
    (
        "key-value put (checks, cache, store)",
        ("trio_durable/_storage/", "trio_durable._storage"),
    ),
    ("SQLite (statements, commit)", ("sqlite3",)),
    (
        "Trio (scheduler, task switches, cancel scopes)",
        ("/trio/", "trio._core", "outcome", "sniffio"),
    ),
]


def profile_groups(profiler: cProfile.Profile) -> list[tuple[str, float]]:
    """Total own time (tottime) of the profiled run, by group."""
    stats = pstats.Stats(profiler)
    totals: dict[str, float] = {}
    # pstats keeps its table in .stats: (file, line, name) -> (cc, nc, tottime, cumtime, callers)
    for (file, _, name), row in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{file} {name}"
        group = next(
            (label for label, needles in PROFILE_GROUPS if any(n in where for n in needles)),
            "other (builtins: dict, next, contextlib...)",
        )
        totals[group] = totals.get(group, 0.0) + row[2]
    return sorted(totals.items(), key=lambda item: -item[1])


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
                await ctx.storage.put(
                    {f"k{i:06}": VALUE for i in range(start, min(n, start + 128))}
                )

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
        # From before the open: the runtime starts firing due alarms while it
        # opens, and may have fired them all by the time it is open.
        start = time.perf_counter()
        async with td.open_runtime(OBJECTS, data_dir) as rt:
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
        first, first_cpu = baseline(root / "b1.db", 5000)
        for tune_gc in (False, True):
            # Keys without a suffix: tune_gc off (as a library); "_tuned": tune_gc on (serve).
            suffix = "_tuned" if tune_gc else ""
            gc_label = f"tune_gc={tune_gc}"
            for threaded in (True, False):
                label = "thread" if threaded else "inline"
                rate, per_cpu = await one_object(
                    root / f"one-{label}{suffix}", 2000, threaded, tune_gc
                )
                figures.update(
                    {f"one_{label}{suffix}": rate, f"one_{label}{suffix}_per_cpu": per_cpu}
                )
            for threaded in (True, False):
                label = "thread" if threaded else "inline"
                many = await many_objects(
                    root / f"many-{label}{suffix}", args.objects, args.writes, threaded, tune_gc
                )
                figures.update(
                    {
                        f"many_{label}{suffix}": many["rate"],
                        f"many_{label}{suffix}_per_cpu": many["per_cpu"],
                    }
                )
                figures[f"many_{label}{suffix}_gc_us_per_write"] = many["gc_us_per_write"]
                blocks = many["blocks"]
                rows.append(
                    (
                        f"{args.objects:,} objects, {gc_label}: loop block per commit ({label}) p50 / p99 / max",
                        f"{pct(blocks, 0.5) * 1e3:.2f} / {pct(blocks, 0.99) * 1e3:.2f} / {max(blocks) * 1e3:.2f} ms; "
                        f"{many['commits']:,} commits; GC {many['gc_us_per_write']:.1f} us per write",
                    )
                )
        last, last_cpu = baseline(root / "b2.db", 5000)
        base, base_cpu = (first + last) / 2, (first_cpu + last_cpu) / 2
        figures.update(baseline=base, baseline_per_cpu=base_cpu)
        write_rows = [
            (
                "plain sqlite3, 1 commit per write (baseline, mean of start and end)",
                f"{base:,.0f} writes/s (start {first:,.0f}, end {last:,.0f}); "
                f"{base_cpu:,.0f} per CPU-second (start {first_cpu:,.0f}, end {last_cpu:,.0f}); "
                f"{1e6 / base_cpu:.1f} us CPU per write",
            )
        ]
        for suffix, gc_label in (("", "tune_gc=False"), ("_tuned", "tune_gc=True")):
            for kind, name in (
                ("one", "1 object, sequential acknowledged writes"),
                ("many", f"{args.objects:,} objects concurrently"),
            ):
                for label in ("thread", "inline"):
                    rate, per_cpu = (
                        figures[f"{kind}_{label}{suffix}"],
                        figures[f"{kind}_{label}{suffix}_per_cpu"],
                    )
                    write_rows.append(
                        (
                            f"{name}, {gc_label} ({label} commits)",
                            f"{rate:,.0f} writes/s ({rate / base:.2f}x); {per_cpu:,.0f} per CPU-second "
                            f"({per_cpu / base_cpu:.2f}x); {1e6 / per_cpu:.1f} us CPU per write",
                        )
                    )
        rows = write_rows + rows
        profiler = cProfile.Profile()
        profiled = await many_objects(
            root / "profiled", args.objects, args.writes, False, True, profiler
        )
        rate = await many_objects_inside(root / "inside", args.objects, args.writes)
        rows.append(
            (f"{args.objects:,} objects, put + sync() inside the object", f"{rate:,.0f} writes/s")
        )
        rate = await rpc_noop(root / "noop", args.objects, args.writes)
        rows.append(
            (f"{args.objects:,} objects, RPC with no storage (ceiling)", f"{rate:,.0f} calls/s")
        )
        cached, uncached = await reads(root / "reads", 20_000)
        rows.append(("reads, cached keys", f"{cached:,.0f} reads/s"))
        rows.append(("reads, uncached keys (SQLite point lookup)", f"{uncached:,.0f} reads/s"))
        rate = await alarms(root / "alarms", args.alarms)
        rows.append(
            (
                f"{args.alarms:,} due alarms fired after a restart (open included)",
                f"{rate:,.0f} alarms/s",
            )
        )
    if args.json:
        await trio.Path(args.json).write_text(json.dumps(figures, indent=2))
    width = max(len(name) for name, _ in rows)
    print(f"| {'measurement'.ljust(width)} | result |")
    print(f"| {'-' * width} | --- |")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")
    groups = profile_groups(profiler)
    total = sum(seconds for _, seconds in groups)
    cpu_per_write = 1e6 / figures["many_inline_tuned_per_cpu"]
    writes = args.objects * args.writes
    print(
        f"\nWhere the CPU of an acknowledged write goes: {args.objects:,} objects x {args.writes} writes, "
        f"inline commits, tune_gc=True, under cProfile ({total / writes * 1e6:.1f} us profiled per write; "
        f"unprofiled: {cpu_per_write:.1f} us CPU per write, of which GC "
        f"{figures['many_inline_tuned_gc_us_per_write']:.1f} us; profiled GC {profiled['gc_us_per_write']:.1f} us)"
    )
    gwidth = max(len(label) for label, _ in groups)
    print(
        f"| {'group'.ljust(gwidth)} | share of profiled time | us per write (scaled to unprofiled CPU) |"
    )
    print(f"| {'-' * gwidth} | --- | --- |")
    for label, seconds in groups:
        share = seconds / total
        print(f"| {label.ljust(gwidth)} | {share:.1%} | {share * cpu_per_write:.1f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--writes", type=int, default=20)
    parser.add_argument("--alarms", type=int, default=10_000)
    parser.add_argument("--json", help="write the write-rate figures to this file")
    trio.run(main, parser.parse_args())
