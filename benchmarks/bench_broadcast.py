"""Broadcast of 64 bytes to 1,000 sockets of one object, vs trio-websocket, websockets, raw TCP.

1,000 connections (``--sockets``) are opened by the load generator (a
separate process) to one trio_durable object. A round: the first connection
sends ``broadcast``; the object loops over ``self.ctx.get_websockets()``
with ``await peer.send(64 bytes)``, then reports its loop time in a
``done`` message. The load generator notes when the last of the 1,000 sockets
got its copy.

Baselines in the same run, each server alone in its process:

* trio-websocket: the handler of the triggering connection loops
  ``await conn.send_message(payload)`` over the 1,000 connections;
* websockets (asyncio): ``websockets.asyncio.server.broadcast(conns, payload)``;
* raw Trio TCP: ``await stream.send_all(frame)`` over 1,000 streams.

Two figures per server, median (and best) over the rounds:
**server loop**, the time the server's send loop took (what the target is
about: a round in <= 0.2x trio-websocket's), and **round trip**,
from the trigger leaving the client until the last socket got the message
(includes the load generator reading 1,000 sockets).

Run::

    python -m benchmarks.bench_broadcast            # 50 rounds
    python -m benchmarks.bench_broadcast --quick    # 20 rounds
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from benchmarks._common import LoadGenerators, progress, start_server, table
from benchmarks.bench_echo import KINDS as _ECHO_KINDS

#: The servers measured: every echo kind that can broadcast (the C echo server cannot).
KINDS = {kind: label for kind, label in _ECHO_KINDS.items() if kind != "cecho"}


def broadcast_rounds(gens: LoadGenerators, rounds: int, pause: float = 0.02) -> dict[str, Any]:
    """Run broadcast rounds; the trigger is connection 0 (in the first generator)."""
    loops: list[float] = []
    trips: list[float] = []
    incomplete = 0
    for _ in range(rounds):
        for proc in gens.procs[1:]:
            proc.send(cmd="broadcast_round", trigger=False)
        gens.procs[0].send(cmd="broadcast_round", trigger=True)
        replies = [proc.receive() for proc in gens.procs]
        first = replies[0]
        if any(r["received"] < r["expected"] for r in replies) or first["server_seconds"] is None:
            incomplete += 1
            continue
        loops.append(first["server_seconds"])
        trips.append(max(r["t_last"] for r in replies) - first["t_trigger"])
        time.sleep(pause)
    return {
        "rounds": rounds,
        "incomplete": incomplete,
        "loop_ms_median": statistics.median(loops) * 1e3 if loops else None,
        "loop_ms_best": min(loops) * 1e3 if loops else None,
        "trip_ms_median": statistics.median(trips) * 1e3 if trips else None,
        "trip_ms_best": min(trips) * 1e3 if trips else None,
    }


def measure(kind: str, sockets: int, rounds: int) -> dict[str, Any]:
    server, port = start_server(kind)
    try:
        with LoadGenerators(sockets) as gens:
            reply = gens.connect(port, sockets, objects=1, prefix="/o/room-")
            if reply["failed"]:
                raise RuntimeError(f"{kind}: {reply['errors']}")
            broadcast_rounds(gens, 3)  # warm-up
            before = server.call(cmd="stats")
            result = broadcast_rounds(gens, rounds)
            after = server.call(cmd="stats")
            result["server_cpu_ms_per_round"] = (after["cpu"] - before["cpu"]) / rounds * 1e3
    finally:
        server.close()
    progress(
        f"broadcast {kind:>3}: loop {result['loop_ms_median']:.2f} ms, "
        f"round trip {result['trip_ms_median']:.2f} ms (median of {rounds})"
    )
    return result


def run(
    quick: bool = False,
    sockets: int = 1000,
    rounds: int | None = None,
    kinds: list[str] | None = None,
) -> dict[str, Any]:
    rounds = rounds or (20 if quick else 50)
    results: dict[str, Any] = {"sockets": sockets, "rounds": rounds, "servers": {}}
    for kind in kinds or list(KINDS):
        results["servers"][kind] = measure(kind, sockets, rounds)
    td = results["servers"].get("td")
    tw = results["servers"].get("tw")
    if td and tw:
        results["loop_fraction_of_tw"] = td["loop_ms_median"] / tw["loop_ms_median"]
        results["trip_fraction_of_tw"] = td["trip_ms_median"] / tw["trip_ms_median"]
    return results


def report(results: dict[str, Any]) -> str:
    servers = results["servers"]
    tw = servers.get("tw")
    rows = []
    for kind, r in servers.items():
        rows.append(
            [
                KINDS[kind],
                f"{r['loop_ms_median']:.2f} ({r['loop_ms_best']:.2f})",
                f"{r['loop_ms_median'] / tw['loop_ms_median']:.2f}x" if tw else "-",
                f"{r['trip_ms_median']:.2f} ({r['trip_ms_best']:.2f})",
                f"{r['trip_ms_median'] / tw['trip_ms_median']:.2f}x" if tw else "-",
                f"{r['server_cpu_ms_per_round']:.2f}",
            ]
        )
    return table(
        rows,
        [
            "server",
            "server loop ms, median (best)",
            "loop vs trio-websocket",
            "round trip ms, median (best)",
            "round trip vs trio-websocket",
            "server CPU ms/round",
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--only", nargs="*", choices=list(KINDS))
    parser.add_argument("--json")
    args = parser.parse_args()
    results = run(args.quick, args.sockets, args.rounds, args.only)
    print(f"{results['sockets']:,} sockets, {results['rounds']} rounds")
    print(report(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
