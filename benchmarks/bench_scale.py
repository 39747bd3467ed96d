"""Scale: N WebSocket connections, hibernated, woken all at once, broadcast to.

The load generator (``benchmarks.loadgen``: raw non-blocking sockets, one
epoll set, a prepared handshake; one process per 18,000 connections) opens
``--connections`` (default 19,000) WebSocket connections to ``td.serve`` in
a separate server process, in steps, and measures at each step the server's
RSS (after ``gc.collect()``) and open fds. Cases, each with a fresh server:

``td_many``     spread over ``--objects`` (1,000) objects; every object is
                left to hibernate (``hibernate_after=1``) and every socket to
                park (``park_after=0.5``) before each RSS reading.
``td_one``      all connections on one object, hibernated the same way.
``td_awake``    spread over 1,000 objects that stay awake
                (``hibernate_after`` and ``park_after`` of an hour), each
                socket with its reader task (a message went through each).
``tw``          trio-websocket's ``serve_websocket`` run the same way (one
                handler task per connection, waiting in ``get_message``).

At the full count: the time to connect all and the server CPU time per
connection (handshake, routing, activation, accept; ``process_time`` of the
server); a **wake storm** (one message to every connection, spread evenly
over one second; every reply counted, latency p50/p99; target: all answered,
and p99 <= 1 s, the goal being 10,000 wakes within one second served by one
process); for ``td_one`` a **broadcast** of 64 bytes from the object to all
its sockets.

The count is a parameter: ``--connections 100000`` runs unchanged where the
fd limit allows it (it needs that many fds in the server process; the load
generator is split in processes of 18,000 and binds source addresses
127.0.0.1-4 to stay clear of ephemeral port limits). This machine allows
20,000 fds per process, hence the default of 19,000.

Writes ``docs/scale_rss.png`` (RSS against connection count) when
matplotlib is installed (``pip install matplotlib``).

Run::

    python -m benchmarks.bench_scale                       # 19,000 connections
    python -m benchmarks.bench_scale --quick               # 3,000
    python -m benchmarks.bench_scale --connections 5000 --cases td_many tw
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from benchmarks._common import (
    ROOT,
    LoadGenerators,
    fd_limit,
    progress,
    start_server,
    summary_ms,
    table,
    wait_until,
)
from benchmarks.bench_broadcast import broadcast_rounds

CASES = {
    "td_many": "trio_durable, hibernated, 1,000 objects",
    "td_one": "trio_durable, hibernated, 1 object",
    "td_awake": "trio_durable, awake, 1,000 objects",
    "tw": "trio-websocket",
}
SOURCES = 4  # 127.0.0.1 .. 127.0.0.4


def steps_for(connections: int) -> list[int]:
    return sorted({max(1, connections // 8), connections // 4, connections // 2, connections})


def storm(gens: LoadGenerators, spread: float = 1.0) -> dict[str, Any]:
    at = time.monotonic() + 0.3
    replies = gens.each(cmd="storm", at=at, spread=spread, timeout=30.0)
    latencies = [x for r in replies for x in r["latencies"]]
    return {
        "sent": sum(r["sent"] for r in replies),
        "answered": sum(r["answered"] for r in replies),
        "send_seconds": max(r["send_seconds"] for r in replies),
        **summary_ms(latencies),
    }


def run_case(case: str, connections: int, objects: int, full_storm: bool = True) -> dict[str, Any]:
    kind = "tw" if case == "tw" else "td"
    hibernating = case in ("td_many", "td_one")
    n_objects = 1 if case == "td_one" else objects
    options: dict[str, Any] = {"max_connections": connections + 200}
    if kind == "td":
        if hibernating:
            options.update(hibernate_after=1.0, park_after=0.5)
        else:
            options.update(hibernate_after=3600, park_after=3600)
    server, port = start_server(kind, **options)
    result: dict[str, Any] = {"case": case, "connections": connections, "objects": n_objects}
    points: list[dict[str, Any]] = []

    def settled(target: int) -> dict[str, Any]:
        if hibernating:
            stats = wait_until(
                server,
                lambda s: s["live_objects"] == 0 and s["parked"] >= target,
                timeout=60,
                interval=0.5,
            )
            if stats["live_objects"] or stats["parked"] < target:
                raise RuntimeError(f"{case}: did not hibernate: {stats}")
            time.sleep(0.5)
        return server.call(cmd="stats", gc=True)

    try:
        with LoadGenerators(connections) as gens:
            # Warm up imports and code paths, then take the base line.
            gens.connect(port, 20, objects=n_objects, prefix="/o/scale-", sources=SOURCES)
            if not hibernating:
                storm(gens, 0.0)
            gens.each(cmd="close")
            time.sleep(1.5)
            base = settled(0)
            points.append({"connections": 0, "rss": base["rss"], "fds": base["fds"]})
            have = 0
            connect_seconds = 0.0
            connect_cpu = 0.0
            for target in steps_for(connections):
                before = server.call(cmd="stats")
                reply = gens.connect(
                    port,
                    target - have,
                    objects=n_objects,
                    prefix="/o/scale-",
                    first=have,
                    sources=SOURCES,
                )
                after = server.call(cmd="stats")
                if reply["failed"]:
                    raise RuntimeError(f"{case}: {reply['failed']} failed: {reply['errors']}")
                connect_seconds += reply["seconds"]
                connect_cpu += after["cpu"] - before["cpu"]
                have = target
                if not hibernating:
                    # A message through every connection: readers, codecs, live objects.
                    awake = storm(gens, 1.0)
                    if awake["answered"] < have:
                        raise RuntimeError(f"{case}: only {awake['answered']} of {have} answered")
                stats = settled(have)
                points.append({"connections": have, "rss": stats["rss"], "fds": stats["fds"]})
                progress(
                    f"scale {case}: {have:,} connections, RSS {stats['rss'] / 2**20:.1f} MiB, "
                    f"{(stats['rss'] - base['rss']) / have:,.0f} B/connection"
                )
            last = points[-1]
            result.update(
                points=points,
                rss_base=base["rss"],
                rss_per_connection=(last["rss"] - base["rss"]) / connections,
                fds=last["fds"],
                connect_seconds=connect_seconds,
                connects_per_second=connections / connect_seconds,
                server_cpu_us_per_connection=connect_cpu / connections * 1e6,
            )
            if hibernating:
                result["live_objects_before_storm"] = 0
            if full_storm:
                before = server.call(cmd="stats")
                result["storm"] = st = storm(gens, 1.0)
                after = server.call(cmd="stats")
                st["server_cpu_us_per_message"] = (
                    (after["cpu"] - before["cpu"]) / max(1, st["answered"]) * 1e6
                )
                if kind == "td":
                    st["activations"] = after["activations"] - before["activations"]
                progress(
                    f"scale {case}: storm {st['answered']:,}/{st['sent']:,} answered, "
                    f"p50 {st['p50_ms']} ms, p99 {st['p99_ms']} ms"
                )
                if hibernating:
                    stats = settled(connections)
                    result["rss_per_connection_after_storm"] = (
                        stats["rss"] - base["rss"]
                    ) / connections
            if case == "td_one":
                if hibernating:
                    settled(connections)
                result["broadcast"] = bc = broadcast_rounds(gens, 3, pause=0.5)
                progress(
                    f"scale {case}: broadcast to {connections:,}: loop "
                    f"{bc['loop_ms_median']:.1f} ms, round trip {bc['trip_ms_median']:.1f} ms"
                )
            gens.each(cmd="close")
    finally:
        server.close()
    return result


def plot(results: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        progress("matplotlib is not installed: no plot (pip install matplotlib)")
        return False
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for case, data in results["cases"].items():
        xs = [p["connections"] for p in data["points"]]
        ys = [p["rss"] / 2**20 for p in data["points"]]
        ax.plot(
            xs,
            ys,
            marker="o",
            label=f"{CASES[case]} ({data['rss_per_connection'] / 1024:.1f} KiB/conn)",
        )
    ax.set_xlabel("open WebSocket connections")
    ax.set_ylabel("server RSS (MiB)")
    ax.set_title("Server memory against connection count")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


def run(
    quick: bool = False,
    connections: int | None = None,
    objects: int = 1000,
    cases: list[str] | None = None,
    plot_path: Path | None = None,
) -> dict[str, Any]:
    connections = connections or (3000 if quick else 19_000)
    if connections + 50 > fd_limit():
        raise SystemExit(
            f"{connections:,} connections need as many fds in the server; "
            f"the limit here is {fd_limit():,}"
        )
    results: dict[str, Any] = {"connections": connections, "objects": objects, "cases": {}}
    for case in cases or list(CASES):
        results["cases"][case] = run_case(case, connections, objects)
    if plot_path is not None and plot(results, plot_path):
        results["plot"] = str(
            plot_path.relative_to(ROOT) if plot_path.is_relative_to(ROOT) else plot_path
        )
    return results


def report(results: dict[str, Any]) -> str:
    cases = results["cases"]
    tw = cases.get("tw")
    rows = []
    for case, r in cases.items():
        st = r.get("storm", {})
        rows.append(
            [
                CASES[case],
                f"{r['connections']:,}",
                f"{r['rss_per_connection'] / 1024:.2f}",
                f"{tw['rss_per_connection'] / r['rss_per_connection']:.1f}x" if tw else "-",
                f"{r['connect_seconds']:.1f}",
                f"{r['server_cpu_us_per_connection']:.0f}",
                f"{st.get('answered', 0):,}/{st.get('sent', 0):,}",
                f"{st.get('p50_ms', float('nan')):.1f} / {st.get('p99_ms', float('nan')):.1f}",
            ]
        )
    text = table(
        rows,
        [
            "case",
            "connections",
            "RSS KiB/conn",
            "less memory than tw",
            "connect all s",
            "server CPU us/conn",
            "storm answered",
            "storm p50 / p99 ms",
        ],
    )
    one = cases.get("td_one", {}).get("broadcast")
    if one:
        text += (
            f"\n\nBroadcast of 64 bytes from one object to its {cases['td_one']['connections']:,} "
            f"sockets: server loop {one['loop_ms_median']:.1f} ms (median of {one['rounds']}), "
            f"until the last socket got it {one['trip_ms_median']:.1f} ms."
        )
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3,000 connections")
    parser.add_argument("--connections", type=int)
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--cases", nargs="*", choices=list(CASES))
    parser.add_argument(
        "--plot", default=str(ROOT / "docs" / "scale_rss.png"), help="PNG to write ('' for none)"
    )
    parser.add_argument("--json")
    args = parser.parse_args()
    results = run(
        args.quick,
        args.connections,
        args.objects,
        args.cases,
        Path(args.plot) if args.plot else None,
    )
    print(report(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
