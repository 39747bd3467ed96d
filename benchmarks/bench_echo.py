"""Echo throughput: td.serve with a hibernatable object vs trio-websocket, websockets, raw TCP.

Each server runs alone in its own process; the load generator runs in
another: ``benchmarks/cload.c`` (C, one epoll loop, built on first use; see
``benchmarks/_cload.py``), or with ``--generator python`` the older
``benchmarks.loadgen``. With ``C``
clients, each client sends a 32-byte text message, waits for the echo, and
sends the next (a closed loop, so ``C`` messages are in flight). All clients
of trio_durable talk to one object of the ``echo`` namespace, which accepted
their sockets as hibernatable and answers in ``websocket_message`` with
``await ws.send(message)``.

Reported per server and client count: messages/s (wall clock, best of
``--repeats`` runs of ``--seconds``), the server's CPU time per message
(``time.process_time()`` deltas of the server process: more stable than
wall-clock rates on a shared machine), and the round-trip p50/p99 seen by the
client, and the generator's own CPU time per message. The ``cecho`` row is
a bare C echo server: its rate is the generator's ceiling on this machine.
Targets: trio_durable >= 1.5x trio-websocket; server CPU per message <=
1.5x raw Trio TCP; >= 1.3x the ``websockets`` server's messages/s.

Run::

    python -m benchmarks.bench_echo            # 3 s x 3 repeats per point
    python -m benchmarks.bench_echo --quick    # 2 s x 2
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from benchmarks import _cload
from benchmarks._cload import CEchoServer
from benchmarks._common import (
    LoadGenerators,
    percentile,
    progress,
    start_server,
    table,
)

KINDS = {
    "td": "trio_durable (td.serve)",
    "tw": "trio-websocket",
    "ws": "websockets (asyncio)",
    "raw": "raw Trio TCP echo (ceiling)",
    "cecho": "C epoll echo (the generator's ceiling)",
}


def _python_echo(gens: LoadGenerators, count: int, seconds: float) -> dict[str, Any]:
    (result,) = gens.each(cmd="echo", clients=count, seconds=seconds)
    return {**result, "generator_cpu_us_per_message": math.nan}


def measure(
    kind: str, clients: list[int], seconds: float, repeats: int, generator: str = "c"
) -> dict[str, Any]:
    """Echo runs against one server ``kind`` (``cecho``: the C echo server, the generator's ceiling)."""
    out: dict[str, Any] = {}
    if kind == "cecho":
        server: Any = CEchoServer()
        port = server.port
    else:
        server, port = start_server(kind)
    gens = None
    try:
        if generator == "python":
            gens = LoadGenerators(max(clients))
            reply = gens.connect(port, max(clients), objects=1, prefix="/o/echo-")
            if reply["failed"]:
                raise RuntimeError(f"{kind}: {reply['errors']}")
            gens.each(cmd="echo", clients=1, seconds=0.5)  # warm-up
        else:
            _cload.echo(port, "/o/echo-0", 1, 0.5)  # warm-up (and the build)
        for count in clients:
            best: dict[str, Any] | None = None
            for _ in range(repeats):
                before = server.cpu() if kind == "cecho" else server.call(cmd="stats")["cpu"]
                if gens is not None:
                    result = _python_echo(gens, count, seconds)
                else:
                    result = _cload.echo(port, "/o/echo-0", count, seconds)
                after = server.cpu() if kind == "cecho" else server.call(cmd="stats")["cpu"]
                cpu = after - before
                run = {
                    "rate": result["rate"],
                    "cpu_us_per_message": cpu / max(1, result["messages"]) * 1e6,
                    "generator_cpu_us_per_message": result["generator_cpu_us_per_message"],
                    "p50_ms": percentile(result["latencies"], 50) * 1e3,
                    "p99_ms": percentile(result["latencies"], 99) * 1e3,
                }
                if best is None or run["rate"] > best["rate"]:
                    best = run
            assert best is not None
            out[f"clients_{count}"] = best
            progress(
                f"echo {kind:>5} {count:>3} clients: {best['rate']:>8,.0f} msg/s, "
                f"{best['cpu_us_per_message']:.1f} us server CPU/msg, "
                f"{best['generator_cpu_us_per_message']:.1f} us generator CPU/msg"
            )
    finally:
        if gens is not None:
            gens.close()
        server.close()
    return out


def run(
    quick: bool = False,
    seconds: float | None = None,
    repeats: int | None = None,
    kinds: list[str] | None = None,
    generator: str = "c",
) -> dict[str, Any]:
    seconds = seconds or (2.0 if quick else 3.0)
    repeats = repeats or (2 if quick else 3)
    clients = [1, 100]
    results: dict[str, Any] = {
        "seconds": seconds,
        "repeats": repeats,
        "generator": generator,
        "servers": {},
    }
    for kind in kinds or list(KINDS):
        if kind == "cecho" and generator != "c":
            continue
        results["servers"][kind] = measure(kind, clients, seconds, repeats, generator)
    td = results["servers"].get("td")
    tw = results["servers"].get("tw")
    if td and tw:
        for count in clients:
            key = f"clients_{count}"
            results[f"ratio_vs_tw_{key}"] = td[key]["rate"] / tw[key]["rate"]
            results[f"cpu_ratio_vs_tw_{key}"] = (
                tw[key]["cpu_us_per_message"] / td[key]["cpu_us_per_message"]
            )
    return results


def report(results: dict[str, Any]) -> str:
    rows = []
    servers = results["servers"]
    tw = servers.get("tw")
    for kind, data in servers.items():
        for key, value in data.items():
            ratio = f"{value['rate'] / tw[key]['rate']:.2f}x" if tw else "-"
            cpu_ratio = (
                f"{tw[key]['cpu_us_per_message'] / value['cpu_us_per_message']:.2f}x" if tw else "-"
            )
            rows.append(
                [
                    KINDS[kind],
                    key.split("_")[1],
                    f"{value['rate']:,.0f}",
                    ratio,
                    f"{value['cpu_us_per_message']:.1f}",
                    cpu_ratio,
                    f"{value['generator_cpu_us_per_message']:.1f}",
                    f"{value['p50_ms']:.2f} / {value['p99_ms']:.2f}",
                ]
            )
    return table(
        rows,
        [
            "server",
            "clients",
            "messages/s",
            "vs trio-websocket",
            "server CPU us/msg",
            "CPU vs trio-websocket",
            "generator CPU us/msg",
            "RTT p50 / p99 ms",
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--only", nargs="*", choices=list(KINDS))
    parser.add_argument(
        "--generator",
        choices=["c", "python"],
        default="c",
        help="c: benchmarks/cload.c (default); python: benchmarks/loadgen.py",
    )
    parser.add_argument("--json", help="write results to this file")
    args = parser.parse_args()
    results = run(args.quick, args.seconds, args.repeats, args.only, args.generator)
    print(report(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
