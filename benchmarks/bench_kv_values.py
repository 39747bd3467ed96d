"""The CPU cost of ``put`` and ``get`` inside one object, by value, without commits.

``bench_storage`` measures acknowledged writes, where commits and RPC
dominate and the machine's noise hides a few microseconds. This script
isolates what the value format costs: inside one event of one object, it
times ``put`` of a value (encode, cache, buffer) and ``get`` of a cached key
(cache lookup, decode, a fresh copy), in process CPU time, best of
``--repeats``. The runtime is in memory and commits run after the timing.

The storage part uses only the public API, so it runs on any release: to
compare two trees, run it with ``PYTHONPATH`` pointing at each. A second
table splits the format's own cost: 0.1.0's JSON (the C ``json`` encoder
with the settings 0.1.0 used) against the codec's ``encode`` (and the
Python pass inside it) and ``decode``.

Run: ``python -m benchmarks.bench_kv_values [--ops 20000] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import attrs
import trio

import trio_durable as td
from trio_durable.testing import run_in_object


@attrs.define(eq=False)
class Bench(td.DurableObject):
    pass


@attrs.define
class Record:
    name: str
    score: int
    when: str


def make_values() -> dict[str, Any]:
    doc = {
        "room": "lobby",
        "members": [
            {
                "id": i,
                "name": f"member-{i}",
                "online": i % 3 == 0,
                "score": i * 1.25,
                "tags": ["alpha", "beta", f"t{i % 7}"],
                "profile": {"city": "Paris", "langs": ["fr", "en"], "age": 20 + i % 50},
            }
            for i in range(70)
        ],
    }
    return {
        "int": 12345,
        "64-byte str": "The quick brown fox jumps over the lazy dog, again and again!!!!",
        "small dict (bench_storage's)": {
            "user": "someone",
            "score": 12345,
            "tags": ["a", "b", "c"],
        },
        "attrs record": Record(name="ada", score=7, when="2024-05-01"),
        "10 KB nested": doc,
    }


async def measure(ops: int, repeats: int) -> list[tuple[str, float, float]]:
    rows = []
    async with td.open_runtime({"bench": Bench}) as rt:
        stub = rt.namespace("bench").get_by_name("solo")
        for label, value in make_values().items():
            n = ops if label != "10 KB nested" else ops // 20

            async def body(obj: Any, ctx: td.ObjectContext, value: Any = value, n: int = n) -> Any:
                storage = ctx.storage
                keys = [f"k{i % 100}" for i in range(n)]
                best_put = best_get = float("inf")
                for _ in range(repeats):
                    start = time.process_time()
                    for key in keys:
                        await storage.put(key, value)
                    best_put = min(best_put, time.process_time() - start)
                    start = time.process_time()
                    for key in keys:
                        await storage.get(key)
                    best_get = min(best_get, time.process_time() - start)
                return best_put / n, best_get / n

            put, get = await run_in_object(stub, body)
            rows.append((label, put, get))
    return rows


def _best(fn: Callable[[], Any], n: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, time.process_time() - start)
    return best / n


def measure_format(ops: int, repeats: int) -> list[tuple[str, list[float]]]:
    """µs of CPU: json encode, codec encode, its Python pass, json decode, codec decode."""
    from trio_durable import _codec

    encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    rows = []
    for label, value in make_values().items():
        if attrs.has(type(value)):
            value = attrs.asdict(value)  # 0.1.0 unstructured records first (cattrs)
        n = ops if label != "10 KB nested" else ops // 20
        as_json = encoder.encode(value).encode("utf-8")
        as_codec = _codec.encode(value)
        walk = _codec._STORE_WALK.value
        costs = [
            _best(lambda v=value: encoder.encode(v).encode("utf-8"), n, repeats),
            _best(lambda v=value: _codec.encode(v), n, repeats),
            _best(lambda v=value, w=walk: w(v, 0), n, repeats),
            _best(lambda d=as_json: json.loads(d), n, repeats),
            _best(lambda d=as_codec: _codec.decode(d), n, repeats),
        ]
        rows.append((f"{label} ({len(as_json):,} / {len(as_codec):,} bytes)", costs))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ops", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = trio.run(measure, args.ops, args.repeats)
    print("| value | put (µs CPU) | get, cached (µs CPU) |")
    print("| --- | --- | --- |")
    for label, put, get in rows:
        print(f"| {label} | {put * 1e6:.1f} | {get * 1e6:.1f} |")
    print()
    print(
        "| value (json / codec bytes) | json encode | codec encode | its pass | json decode | codec decode |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for label, costs in measure_format(args.ops, args.repeats):
        print(f"| {label} | " + " | ".join(f"{c * 1e6:.2f}" for c in costs) + " |")


if __name__ == "__main__":
    main()
