"""RPC throughput and activation rate of the core runtime.

Measures, in one process:

* round trips per second to one live object (sequential awaits),
* round trips per second spread over 10,000 live objects,
* activations per second (cold calls to new IDs),

next to a baseline measured in the same run: a plain ``await`` of the same
method on an attrs instance (the ceiling any dispatch can reach).

Rates are per second of process CPU time, best of three repeats: the
work is single-threaded and CPU-bound, and CPU time is not disturbed by
other processes on a shared machine the way wall time is.

Usage: ``python -m benchmarks.bench_rpc [--quick] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import attrs
import trio

import trio_durable as td


@attrs.define(eq=False)
class Counter(td.DurableObject):
    hits: int = 0

    async def increment(self) -> int:
        self.hits += 1
        return self.hits

    async def total(self, values: list[int]) -> int:
        return sum(values)


REPEATS = 3


async def _timed(label: str, count: int, fn: Any) -> tuple[str, float]:
    # Best of REPEATS, in process CPU time: the VM is shared, and this
    # single-threaded work is CPU-bound, so CPU time is what it costs us.
    best = float("inf")
    for _ in range(REPEATS):
        start = time.process_time()
        await fn()
        best = min(best, time.process_time() - start)
    return label, count / best


async def run(calls: int, objects: int) -> dict[str, float]:
    results: dict[str, float] = {}

    plain = Counter(ctx=None)  # type: ignore[arg-type]

    async def baseline() -> None:
        for n in range(calls):
            await plain.increment()
            if n % 1000 == 0:
                await trio.lowlevel.checkpoint()  # a fair loop: let other tasks run

    label, rate = await _timed("plain await (baseline)", calls, baseline)
    results[label] = rate

    async with td.open_runtime(objects={"counters": Counter}) as runtime:
        ns = runtime.namespace("counters")
        stub = ns.get_by_name("hot")
        await stub.increment()

        async def one_object() -> None:
            for _ in range(calls):
                await stub.increment()

        label, rate = await _timed("RPC to one live object", calls, one_object)
        results[label] = rate

        ten = list(range(10))

        async def list_argument() -> None:
            for _ in range(calls):
                await stub.total(ten)  # a mutable argument: copied on every call

        label, rate = await _timed("RPC with a 10-element list argument", calls, list_argument)
        results[label] = rate

        batches = iter(range(REPEATS))

        async def activate_all() -> None:
            batch = next(batches)  # new IDs on every repeat: each call is an activation
            for s in [ns.get_by_name(f"cold{batch}-{i}") for i in range(objects)]:
                await s.increment()

        label, rate = await _timed(f"activations ({objects:,} new IDs)", objects, activate_all)
        results[label] = rate
        stubs = [ns.get_by_name(f"cold0-{i}") for i in range(objects)]

        async def spread() -> None:
            rounds = max(1, calls // objects)
            for _ in range(rounds):
                for s in stubs:
                    await s.increment()

        rounds = max(1, calls // objects)
        label, rate = await _timed(
            f"RPC across {objects:,} live objects", rounds * objects, spread
        )
        results[label] = rate

    # The blocking watchdog (on by default): a sampler thread, nothing per step.
    async with td.open_runtime(
        objects={"counters": Counter}, blocking_warning_after=None, blocking_reset_after=None
    ) as runtime:
        stub = runtime.namespace("counters").get_by_name("hot")
        await stub.increment()

        async def one_object_no_watchdog() -> None:
            for _ in range(calls):
                await stub.increment()

        label, rate = await _timed("RPC to one live object, watchdog off", calls, one_object_no_watchdog)
        results[label] = rate
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls")
    parser.add_argument("--json", help="write results to this file")
    args = parser.parse_args()
    calls = 50_000 if args.quick else 200_000
    results = trio.run(run, calls, 10_000)
    base = results["plain await (baseline)"]
    print(f"{'measure':<36} {'per second':>12} {'vs plain await':>15}")
    for label, rate in results.items():
        print(f"{label:<36} {rate:>12,.0f} {rate / base:>14.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
