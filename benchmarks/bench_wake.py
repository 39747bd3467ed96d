"""Wake latency: from a hibernated object (and a parked socket) to its handler's reply.

``--objects`` objects (default 300) each accept one hibernatable socket from
the load generator (a separate process). The server runs with
``hibernate_after=0.3`` and ``park_after=0.1``; once the server reports no
live object and every socket parked, the load generator sends one message on
each connection in turn, waiting for the reply before the next, and records
the time from send to reply. Each such message wakes a parked socket (the
shared epoll waiter starts a reader task) and re-creates an evicted object
(constructor, ``websocket_message`` with ``await ws.send``). This is repeated
for ``--rounds`` rounds, each after a new hibernation.

For reference, the same sequence in the same run:

* trio_durable, **awake**: ``hibernate_after`` and ``park_after`` of 60 s, a
  first pass wakes everything, the second is measured (no activation, the
  reader task is already there);
* trio-websocket: idle connections with their handler task waiting in
  ``get_message()`` (there is no hibernation to wake from).

Target: p99 <= 2 ms from hibernated.

Run::

    python -m benchmarks.bench_wake             # 300 objects x 4 rounds
    python -m benchmarks.bench_wake --quick     # 200 objects x 2 rounds
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from benchmarks._common import LoadGenerators, progress, start_server, summary_ms, table, wait_until


def hibernated_run(objects: int, rounds: int) -> dict[str, Any]:
    server, port = start_server("td", hibernate_after=0.3, park_after=0.1)
    latencies: list[float] = []
    per_round: list[float] = []
    cpu = 0.0
    missed = 0
    try:
        with LoadGenerators(objects) as gens:
            gens.connect(port, objects, objects=objects, prefix="/o/wake-")
            for round_no in range(rounds + 1):
                stats = wait_until(
                    server,
                    lambda s: s["live_objects"] == 0 and s["parked"] >= objects,
                    timeout=20,
                )
                if stats["live_objects"] or stats["parked"] < objects:
                    raise RuntimeError(f"the objects did not hibernate: {stats}")
                before = server.call(cmd="stats")
                (reply,) = gens.each(cmd="sequential")
                after = server.call(cmd="stats")
                if round_no:  # round 0 warms up code paths
                    latencies += reply["latencies"]
                    missed += reply["missed"]
                    per_round.append(summary_ms(reply["latencies"])["p99_ms"])
                    cpu += after["cpu"] - before["cpu"]
            final = server.call(cmd="stats")
    finally:
        server.close()
    return {
        **summary_ms(latencies),
        "missed": missed,
        "activations": final["activations"],
        "p99_ms_per_round": per_round,
        "best_round_p99_ms": min(per_round),
        "server_cpu_us_per_wake": round(cpu / max(1, len(latencies)) * 1e6, 1),
    }


def awake_run(kind: str, objects: int, rounds: int) -> dict[str, Any]:
    options = {"hibernate_after": 60, "park_after": 60} if kind == "td" else {}
    server, port = start_server(kind, **options)
    latencies: list[float] = []
    per_round: list[float] = []
    cpu = 0.0
    missed = 0
    try:
        with LoadGenerators(objects) as gens:
            gens.connect(port, objects, objects=objects, prefix="/o/wake-")
            for round_no in range(rounds + 1):
                before = server.call(cmd="stats")
                (reply,) = gens.each(cmd="sequential")
                after = server.call(cmd="stats")
                if round_no:
                    latencies += reply["latencies"]
                    missed += reply["missed"]
                    per_round.append(summary_ms(reply["latencies"])["p99_ms"])
                    cpu += after["cpu"] - before["cpu"]
    finally:
        server.close()
    return {
        **summary_ms(latencies),
        "missed": missed,
        "p99_ms_per_round": per_round,
        "best_round_p99_ms": min(per_round),
        "server_cpu_us_per_wake": round(cpu / max(1, len(latencies)) * 1e6, 1),
    }


def run(
    quick: bool = False, objects: int | None = None, rounds: int | None = None
) -> dict[str, Any]:
    objects = objects or (200 if quick else 300)
    rounds = rounds or (2 if quick else 4)
    results: dict[str, Any] = {"objects": objects, "rounds": rounds, "servers": {}}
    servers = results["servers"]
    servers["td_hibernated"] = hibernated_run(objects, rounds)
    progress(
        f"wake td hibernated: p50 {servers['td_hibernated']['p50_ms']} ms, "
        f"p99 {servers['td_hibernated']['p99_ms']} ms"
    )
    servers["td_awake"] = awake_run("td", objects, rounds)
    servers["tw_idle"] = awake_run("tw", objects, rounds)
    progress(
        f"wake td awake: p99 {servers['td_awake']['p99_ms']} ms; "
        f"tw idle: p99 {servers['tw_idle']['p99_ms']} ms"
    )
    return results


LABELS = {
    "td_hibernated": "trio_durable, hibernated object + parked socket",
    "td_awake": "trio_durable, awake object (reference)",
    "tw_idle": "trio-websocket, idle connection (reference)",
}


def report(results: dict[str, Any]) -> str:
    rows = [
        [
            LABELS[k],
            f"{v['count']:,}",
            f"{v['p50_ms']:.3f}",
            f"{v['p99_ms']:.3f}",
            f"{v['best_round_p99_ms']:.3f}",
            f"{v['max_ms']:.3f}",
            str(v["missed"]),
            f"{v['server_cpu_us_per_wake']:.0f}",
        ]
        for k, v in results["servers"].items()
    ]
    return table(
        rows,
        [
            "case",
            "samples",
            "p50 ms",
            "p99 ms (all rounds)",
            "p99 ms (best round)",
            "max ms",
            "missed",
            "server CPU us/message",
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--objects", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--json")
    args = parser.parse_args()
    results = run(args.quick, args.objects, args.rounds)
    print(report(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
