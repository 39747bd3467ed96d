"""Fairness under flooding: a bystander's echo and new handshakes while clients flood.

``--flooders`` connections (default 10) to one object send 16-byte messages
as fast as TCP takes them (``loadgen flood``: the echoes are read and thrown
away), with no message rate limit configured on the server. Meanwhile a
*bystander*, in another process, talks to another object: one echo round
trip at a time (16 bytes, a 10 ms pause between them), and every 0.1 s a
new connection's opening handshake to the *flooded* object, timed
from ``connect()`` to the complete 101 response. Server, flooders and
bystander are three processes.

The same run measures trio-websocket (``trio_websocket.serve_websocket``,
one task per connection, which yields to the scheduler for every message)
as the reference. Target: trio_durable's bystander p50 and handshake p50
within 2x of trio-websocket's. Before the reader yielded on a budget, ten
flooders pushed the bystander's p50 past a second.

Run::

    python -m benchmarks.bench_fairness             # 10 flooders, 8 s per server
    python -m benchmarks.bench_fairness --quick     # 5 s per server
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from benchmarks._common import LoadGenerators, progress, start_server, summary_ms, table

KINDS = {"td": "trio_durable (td.serve)", "tw": "trio-websocket"}

#: Seconds of flooding before the bystander starts measuring.
WARMUP = 1.0


def measure(kind: str, flooders: int, seconds: float) -> dict[str, Any]:
    server, port = start_server(kind)
    try:
        with LoadGenerators(flooders) as flood, LoadGenerators(1) as probe:
            reply = flood.connect(port, flooders, objects=1, prefix="/o/flood-")
            calm = probe.connect(port, 1, objects=1, prefix="/o/calm-")
            if reply["failed"] or calm["failed"]:
                raise RuntimeError(f"{kind}: {reply['errors'] or calm['errors']}")
            (quiet,) = probe.each(cmd="probe", port=port, seconds=1.0, handshake_path="/o/flood-0")
            before = server.call(cmd="stats")
            (proc,) = flood.procs
            proc.send(cmd="flood", seconds=seconds + WARMUP + 1.0)
            time.sleep(WARMUP)
            (loud,) = probe.each(
                cmd="probe", port=port, seconds=seconds, handshake_path="/o/flood-0"
            )
            flooded = proc.receive(timeout=seconds + 60)
            after = server.call(cmd="stats")
    finally:
        server.close()
    cpu = after["cpu"] - before["cpu"]
    result = {
        "quiet_echo": summary_ms(quiet["rtts"]),
        "echo": summary_ms(loud["rtts"]),
        "handshake": summary_ms(loud["handshakes"]),
        "missed": loud["missed"],
        "failed_handshakes": loud["failed_handshakes"],
        "flood_echoed_per_s": flooded["echoed_messages"] / flooded["seconds"],
        "flood_dropped": flooded["dropped_by_server"],
        "server_cpu_s": cpu,
    }
    progress(
        f"fairness {kind:>2}: echo p50 {result['echo']['p50_ms']:.2f} ms "
        f"p99 {result['echo']['p99_ms']:.2f} ms, handshake p50 "
        f"{result['handshake']['p50_ms']:.2f} ms max {result['handshake']['max_ms']:.2f} ms, "
        f"flood {result['flood_echoed_per_s']:,.0f} msg/s echoed"
    )
    return result


def run(
    quick: bool = False,
    flooders: int = 10,
    seconds: float | None = None,
    kinds: list[str] | None = None,
) -> dict[str, Any]:
    seconds = seconds or (5.0 if quick else 8.0)
    results: dict[str, Any] = {"flooders": flooders, "seconds": seconds, "servers": {}}
    for kind in kinds or list(KINDS):
        results["servers"][kind] = measure(kind, flooders, seconds)
    td, tw = results["servers"].get("td"), results["servers"].get("tw")
    if td and tw:
        for key in ("echo", "handshake"):
            for stat in ("p50_ms", "p99_ms"):
                results[f"{key}_{stat}_ratio_vs_tw"] = td[key][stat] / tw[key][stat]
    return results


def report(results: dict[str, Any]) -> str:
    rows = []
    for kind, r in results["servers"].items():
        rows.append(
            [
                KINDS[kind],
                f"{r['quiet_echo']['p50_ms']:.2f}",
                f"{r['echo']['p50_ms']:.2f} / {r['echo']['p99_ms']:.2f} / {r['echo']['max_ms']:.1f}",
                f"{r['handshake']['p50_ms']:.2f} / {r['handshake']['max_ms']:.1f}",
                f"{r['missed']} / {r['failed_handshakes']}",
                f"{r['flood_echoed_per_s']:,.0f}",
            ]
        )
    return table(
        rows,
        [
            "server",
            "echo p50 ms, no flood",
            f"echo p50 / p99 / max ms, {results['flooders']} flooders",
            "handshake p50 / max ms",
            "missed / failed",
            "flood echoed msg/s",
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--flooders", type=int, default=10)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--only", nargs="*", choices=list(KINDS))
    parser.add_argument("--json", help="write results to this file")
    args = parser.parse_args()
    results = run(args.quick, args.flooders, args.seconds, args.only)
    print(report(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
