"""RPC throughput and activation rate of the core runtime, and the garbage collector's share.

Measures, in one process:

* round trips per second to one live object (sequential awaits): without
  arguments, with small immutable arguments (``add(1, "room", 2.5, b"id",
  (1, "a"))``: shared by the RPC copy, a type check each) and with a
  10-element list (copied on every call),
* round trips per second spread over 10,000 live objects,
* activations per second (cold calls to new IDs), each in a fresh runtime:
  with ``open_runtime(tune_gc=False)`` (Python's collector as it is) and
  ``tune_gc=True`` (``gc.freeze()`` at start-up and the thresholds of
  ``trio_durable._gc_tuning.TUNED_GC_THRESHOLDS``), then a sweep of the
  young generation's threshold after the same ``gc.freeze()``: the
  measurement the tuned thresholds were chosen by. For each: the share of
  CPU time spent in collections, the longest collection, and the objects
  the collector tracks per live object,

next to a baseline measured in the same run: a plain ``await`` of the same
method on an attrs instance (the ceiling any dispatch can reach).

Rates are per second of process CPU time, best of three repeats: the
work is single-threaded and CPU-bound, and CPU time is not disturbed by
other processes on a shared machine the way wall time is. Time in
collections is the CPU time of the collecting thread between the
collector's start and stop callbacks (``time.thread_time``); the longest
collection is given the same way, the pause it would be on an idle machine.

Usage: ``python -m benchmarks.bench_rpc [--quick] [--json PATH]`` (the JSON
file holds the rates; the collector's figures are printed).
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import attrs
import trio

import trio_durable as td
from trio_durable._gc_tuning import TUNED_GC_THRESHOLDS


@attrs.define(eq=False)
class Counter(td.DurableObject):
    hits: int = 0

    async def increment(self) -> int:
        self.hits += 1
        return self.hits

    async def add(self, a: int, room: str, weight: float, tag: bytes, pair: tuple[int, str]) -> int:
        self.hits += a
        return self.hits

    async def total(self, values: list[int]) -> int:
        return sum(values)


REPEATS = 3
#: Young-generation thresholds tried after gc.freeze() (the older two stay 10, 10).
SWEEP = (700, 2_000, 10_000, 50_000)


async def _timed(label: str, count: int, fn: Callable[[], Awaitable[None]]) -> tuple[str, float]:
    # Best of REPEATS, in process CPU time: the VM is shared, and this
    # single-threaded work is CPU-bound, so CPU time is what it costs us.
    best = float("inf")
    for _ in range(REPEATS):
        start = time.process_time()
        await fn()
        best = min(best, time.process_time() - start)
    return label, count / best


class _CollectorClock:
    """CPU time spent in the garbage collector while it is installed (gc.callbacks)."""

    def __init__(self) -> None:
        self.total = 0.0
        self.longest = 0.0
        self.collections = 0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.thread_time()
        else:
            took = time.thread_time() - self._started
            self.total += took
            self.longest = max(self.longest, took)
            self.collections += 1

    @contextmanager
    def installed(self) -> Iterator[_CollectorClock]:
        gc.callbacks.append(self)
        try:
            yield self
        finally:
            gc.callbacks.remove(self)


@contextmanager
def _frozen_with_threshold(young: int | None) -> Iterator[None]:
    """What tune_gc does, with another young threshold (None: leave the collector alone)."""
    if young is None:
        yield
        return
    previous = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(young, *TUNED_GC_THRESHOLDS[1:])
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()


@asynccontextmanager
async def _runtime(**options: Any) -> AsyncIterator[td.Runtime]:
    async with td.open_runtime(objects={"counters": Counter}, **options) as runtime:
        yield runtime


async def _activations(
    label: str, objects: int, gc_figures: dict[str, dict[str, float]], **options: Any
) -> tuple[str, float]:
    """Activations per CPU second in a fresh runtime, with the collector's share."""
    gc.collect()
    async with _runtime(**options) as runtime:
        ns = runtime.namespace("counters")
        gc.collect()
        tracked_before = len(gc.get_objects())
        batches = iter(range(REPEATS))
        clock = _CollectorClock()
        cpu = 0.0

        async def activate_all() -> None:
            nonlocal cpu
            start = time.process_time()
            batch = next(batches)  # new IDs on every repeat: each call is an activation
            for stub in [ns.get_by_name(f"cold{batch}-{i}") for i in range(objects)]:
                await stub.increment()
            cpu += time.process_time() - start

        with clock.installed():
            result = await _timed(label, objects, activate_all)
        live = runtime.statistics().live_objects
        gc.collect()
        tracked = (len(gc.get_objects()) - tracked_before) / max(1, live)
    gc_figures[label] = {
        "gc_share": clock.total / cpu if cpu else 0.0,
        "collections": clock.collections,
        "longest_collection_ms": clock.longest * 1000,
        "tracked_per_live_object": tracked,
        "live_objects": live,
    }
    return result


async def run(calls: int, objects: int) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    results: dict[str, float] = {}
    gc_figures: dict[str, dict[str, float]] = {}

    plain = Counter(ctx=None)  # type: ignore[arg-type]

    async def baseline() -> None:
        for n in range(calls):
            await plain.increment()
            if n % 1000 == 0:
                await trio.lowlevel.checkpoint()  # a fair loop: let other tasks run

    label, rate = await _timed("plain await (baseline)", calls, baseline)
    results[label] = rate

    async with _runtime() as runtime:
        ns = runtime.namespace("counters")
        stub = ns.get_by_name("hot")
        await stub.increment()

        async def one_object() -> None:
            for _ in range(calls):
                await stub.increment()

        label, rate = await _timed("RPC to one live object", calls, one_object)
        results[label] = rate

        async def immutable_arguments() -> None:
            for _ in range(calls):
                await stub.add(1, "room", 2.5, b"id", (1, "a"))  # shared: a type check each

        label, rate = await _timed(
            "RPC with 5 small immutable arguments", calls, immutable_arguments
        )
        results[label] = rate

        ten = list(range(10))

        async def list_argument() -> None:
            for _ in range(calls):
                await stub.total(ten)  # a mutable argument: copied on every call

        label, rate = await _timed("RPC with a 10-element list argument", calls, list_argument)
        results[label] = rate

        for i in range(objects):
            await ns.get_by_name(f"spread-{i}").increment()
        stubs = [ns.get_by_name(f"spread-{i}") for i in range(objects)]
        rounds = max(1, calls // objects)

        async def spread() -> None:
            for _ in range(rounds):
                for s in stubs:
                    await s.increment()

        label, rate = await _timed(f"RPC across {objects:,} live objects", rounds * objects, spread)
        results[label] = rate

    # The blocking watchdog (on by default): a sampler thread, nothing per step.
    async with _runtime(blocking_warning_after=None, blocking_reset_after=None) as runtime:
        stub = runtime.namespace("counters").get_by_name("hot")
        await stub.increment()

        async def one_object_no_watchdog() -> None:
            for _ in range(calls):
                await stub.increment()

        label, rate = await _timed(
            "RPC to one live object, watchdog off", calls, one_object_no_watchdog
        )
        results[label] = rate

    for tune_gc in (False, True):
        label, rate = await _activations(
            f"activations ({objects:,} new IDs), tune_gc={tune_gc}",
            objects,
            gc_figures,
            tune_gc=tune_gc,
        )
        results[label] = rate
    for young in SWEEP:
        with _frozen_with_threshold(young):
            label, rate = await _activations(
                f"activations ({objects:,} new IDs), gc.freeze() + thresholds "
                f"({young:,}, {TUNED_GC_THRESHOLDS[1]}, {TUNED_GC_THRESHOLDS[2]})",
                objects,
                gc_figures,
            )
        results[label] = rate
    return results, gc_figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls")
    parser.add_argument("--json", help="write the rates to this file")
    args = parser.parse_args()
    calls = 50_000 if args.quick else 200_000
    print(
        f"python gc thresholds by default {gc.get_threshold()}; "
        f"tune_gc=True: gc.freeze() + {TUNED_GC_THRESHOLDS}"
    )
    results, gc_figures = trio.run(run, calls, 10_000)
    base = results["plain await (baseline)"]
    width = max(len(label) for label in results)
    print(f"{'measure':<{width}} {'per CPU second':>15} {'vs plain await':>15}")
    for label, rate in results.items():
        print(f"{label:<{width}} {rate:>15,.0f} {rate / base:>14.3f}x")
    print(
        f"\n{'activations':<{width}} {'GC share of CPU':>16} {'collections':>12} "
        f"{'longest CPU ms':>15} {'tracked/object':>15}"
    )
    for label, figures in gc_figures.items():
        print(
            f"{label:<{width}} {figures['gc_share']:>16.1%} {figures['collections']:>12,.0f} "
            f"{figures['longest_collection_ms']:>15.1f} {figures['tracked_per_live_object']:>15.1f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
