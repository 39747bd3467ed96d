"""Soak: a bounded run of chat traffic with churn, evictions and alarms; no leak, no loss.

A trio_durable server (``td.serve``, SQLite storage in a temporary directory,
``hibernate_after=2``, ``park_after=0.5``) hosts ``--rooms`` chat rooms. Each
room relays every message to every socket of the room (sender included),
writes its counter to storage every 10th message (so relayed messages wait
on the output gate), and keeps an alarm set one second ahead whose handler
writes storage and sends ``alarm <n>`` to the room. A task in the server
force-evicts a tenth of the rooms every ``--evict-every`` seconds
(``trio_durable.testing.evict``), on top of normal hibernation.

The load generator (separate process) keeps ``--connections`` sockets, each
sending ``--rate`` messages per second ``m <id> <seq>``; every second
``--churn`` of them stop, wait for their own messages to come back, and
close (alternately with a Close frame and by dropping TCP), and as many new
ones connect. Every receiver checks that each sender's sequence numbers
arrive without a gap or a repeat; every sender that its own all came back.

The server's RSS and open fds are sampled every ``--sample`` seconds. The
run **fails (exit 1)** if, after the warm-up (the first quarter, at least
10 s), the median RSS of the last third of the samples exceeds that of the
first third by more than ``--rss-tolerance`` (default 10% or 8 MiB, whichever
is larger), or the fds by more than 2% of the connections + 10, or if any
message was lost or reordered, or a connection failed.

``--awake`` runs the rooms as a chat that never sleeps: no forced
evictions, ``hibernate_after`` far beyond the run (so every room stays in
memory the whole time, which the run checks), and every message stored under
a new key, as the chat example keeps its history. Each room's key-value cache
then only grows, and what keeps memory flat is the runtime-wide cache budget
(``--storage-cache-bytes``, 8 MiB in this mode, so the caches reach their
budget within the warm-up). Besides RSS, this mode reads the budget's own
figures from the server at every sample (``Runtime.statistics()``: bytes
the caches hold, the budget, caches emptied to stay within it) and fails if
the caches ever held more than the budget, or never reached it (the run then
tested nothing). A server that does not report them is said so in the
verdict ("cache budget unchecked"); the RSS check still applies.

Run::

    python -m benchmarks.bench_soak                 # 10 minutes
    python -m benchmarks.bench_soak --seconds 60    # one minute
    python -m benchmarks.bench_soak --awake         # rooms that never hibernate
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from typing import Any

from benchmarks._common import LoadGenerators, progress, start_server, table

#: The cache budget of ``--awake``: small enough to be reached within the warm-up.
AWAKE_CACHE_BYTES = 8 * 2**20


def run(
    seconds: float = 600.0,
    connections: int = 200,
    rooms: int = 40,
    rate: float = 2.0,
    churn: float = 0.02,
    sample: float = 5.0,
    evict_every: float = 2.0,
    rss_tolerance: float = 0.10,
    awake: bool = False,
    storage_cache_bytes: int = 0,
) -> dict[str, Any]:
    samples: list[dict[str, Any]] = []
    if awake:
        # Rooms stay in memory for the whole run and keep every message.
        hibernate_after, evict_every, store_messages = 10 * seconds + 3600, 0.0, 1
        storage_cache_bytes = storage_cache_bytes or AWAKE_CACHE_BYTES
    else:
        hibernate_after, store_messages = 2.0, 0
    with tempfile.TemporaryDirectory(prefix="td-soak-") as data_dir:
        server, port = start_server(
            "td",
            hibernate_after=hibernate_after,
            park_after=0.5,
            data_dir=data_dir,
            rooms=rooms,
            evict_every=evict_every,
            alarm_every=1.0,
            max_connections=connections * 4 + 100,
            store_messages=store_messages,
            storage_cache_bytes=storage_cache_bytes,
        )
        try:
            with LoadGenerators(connections) as gens:
                (gen,) = gens.procs
                started = time.monotonic()
                gen.send(
                    cmd="soak",
                    port=port,
                    seconds=seconds,
                    connections=connections,
                    rooms=rooms,
                    rate=rate,
                    churn=churn,
                    sources=4,
                )
                next_sample = started
                next_note = started + 30
                while not gen.ready():
                    now = time.monotonic()
                    if now >= next_sample:
                        stats = server.call(cmd="stats", gc=True)
                        stats["elapsed"] = now - started
                        samples.append(stats)
                        next_sample += sample
                    if now >= next_note:
                        last = samples[-1]
                        progress(
                            f"soak {now - started:.0f}/{seconds:.0f} s: RSS "
                            f"{last['rss'] / 2**20:.1f} MiB, {last['fds']} fds, "
                            f"{last['events']:,} events, {last['evictions'] + last['forced_evictions']:,} evictions"
                        )
                        next_note += 30
                    time.sleep(0.05)
                reply = gen.receive(timeout=60)
                final = server.call(cmd="stats", gc=True)
        finally:
            server.close()
    result = judge(reply, samples, final, connections, seconds, rss_tolerance)
    result["mode"] = "awake" if awake else "churn"
    result["storage_cache_bytes"] = storage_cache_bytes
    if awake and final["evictions"] + final["resets"]:
        result["problems"].append(
            f"rooms were dropped from memory ({final['evictions']} evictions, "
            f"{final['resets']} resets); the awake mode needs them to stay"
        )
    if awake:
        result["cache"] = check_cache(samples, final, storage_cache_bytes, result["problems"])
    result["ok"] = not result["problems"]
    return result


#: The cache budget's figures in the server's ``stats`` reply (from ``Runtime.statistics()``).
CACHE_FIGURES = ("storage_cache_bytes", "storage_cache_budget_bytes", "storage_cache_evictions")


def check_cache(
    samples: list[dict[str, Any]], final: dict[str, Any], budget: int, problems: list[str]
) -> dict[str, Any]:
    """The awake mode's check of the cache budget itself; adds to ``problems``.

    Returns what was found: ``checked`` is False when the server does not
    report the figures.
    """
    reported = [s for s in [*samples, final] if all(s.get(k) is not None for k in CACHE_FIGURES)]
    if not reported:
        return {"checked": False}
    budget = final.get("storage_cache_budget_bytes") or budget
    most = max(s["storage_cache_bytes"] for s in reported)
    evictions = reported[-1]["storage_cache_evictions"]
    if most > budget:
        problems.append(f"the storage caches held {most:,} bytes, over their budget of {budget:,}")
    if not evictions:
        problems.append(
            f"the storage caches never reached their budget of {budget:,} bytes "
            f"(at most {most:,}); the run did not test it: run longer or lower "
            "--storage-cache-bytes"
        )
    return {"checked": True, "budget": budget, "most": most, "evictions": evictions}


def judge(
    reply: dict[str, Any],
    samples: list[dict[str, Any]],
    final: dict[str, Any],
    connections: int,
    seconds: float,
    rss_tolerance: float,
) -> dict[str, Any]:
    stats = reply["stats"]
    warm = max(10.0, seconds / 4)
    steady = [s for s in samples if s["elapsed"] >= warm]
    problems: list[str] = []
    growth: dict[str, Any] = {}
    if len(steady) >= 3:
        third = max(1, len(steady) // 3)
        head, tail = steady[:third], steady[-third:]
        rss_head = statistics.median(s["rss"] for s in head)
        rss_tail = statistics.median(s["rss"] for s in tail)
        fds_head = statistics.median(s["fds"] for s in head)
        fds_tail = statistics.median(s["fds"] for s in tail)
        rss_allowed = max(rss_tolerance * rss_head, 8 * 2**20)
        fds_allowed = 0.02 * connections + 10
        growth = {
            "rss_first_third_mib": rss_head / 2**20,
            "rss_last_third_mib": rss_tail / 2**20,
            "rss_growth_mib": (rss_tail - rss_head) / 2**20,
            "rss_allowed_mib": rss_allowed / 2**20,
            "fds_first_third": fds_head,
            "fds_last_third": fds_tail,
            "fds_allowed_growth": fds_allowed,
        }
        if rss_tail - rss_head > rss_allowed:
            problems.append(
                f"RSS grew {(rss_tail - rss_head) / 2**20:.1f} MiB after warm-up "
                f"(allowed {rss_allowed / 2**20:.1f} MiB)"
            )
        if fds_tail - fds_head > fds_allowed:
            problems.append(f"open fds grew from {fds_head:.0f} to {fds_tail:.0f}")
    else:
        problems.append(f"too few samples after the warm-up ({len(steady)}); run longer")
    for key in ("gaps", "reorders", "own_missing", "unexpected_close", "connect_failures"):
        if stats[key]:
            problems.append(f"{key}: {stats[key]}")
    if stats["sent"] == 0:
        problems.append("no message was sent")
    return {
        "seconds": seconds,
        "client": stats,
        "client_errors": reply["errors"],
        "server_final": {
            k: final[k]
            for k in (
                "rss",
                "fds",
                "events",
                "activations",
                "evictions",
                "forced_evictions",
                "resets",
                "live_objects",
            )
        },
        "growth": growth,
        "samples": [
            {"t": round(s["elapsed"], 1), "rss": s["rss"], "fds": s["fds"]} for s in samples
        ],
        "problems": problems,
        "ok": not problems,
    }


def report(result: dict[str, Any]) -> str:
    c, g, f = result["client"], result["growth"], result["server_final"]
    budget = result.get("storage_cache_bytes") or 0
    rows = [
        [
            "mode",
            f"{result.get('mode', 'churn')} (storage cache budget "
            + (f"{budget / 2**20:g} MiB)" if budget else "default)"),
        ],
        ["duration", f"{c['seconds']:.0f} s"],
        [
            "messages sent / received (relayed to others)",
            f"{c['sent']:,} / {c['received']:,} ({c['relayed']:,})",
        ],
        ["connections opened / closed (churn)", f"{c['opened']:,} / {c['closed']:,}"],
        ["alarm messages received", f"{c['alarms']:,}"],
        [
            "server events / activations / evictions (forced)",
            f"{f['events']:,} / {f['activations']:,} / {f['evictions']:,} ({f['forced_evictions']:,})",
        ],
        ["lost / reordered / own missing", f"{c['gaps']} / {c['reorders']} / {c['own_missing']}"],
    ]
    if g:
        rows += [
            [
                "RSS after warm-up, first third -> last third (median)",
                f"{g['rss_first_third_mib']:.1f} -> {g['rss_last_third_mib']:.1f} MiB "
                f"(allowed +{g['rss_allowed_mib']:.1f})",
            ],
            [
                "open fds, first third -> last third (median)",
                f"{g['fds_first_third']:.0f} -> {g['fds_last_third']:.0f} (allowed +{g['fds_allowed_growth']:.0f})",
            ],
        ]
    cache = result.get("cache")
    if cache is not None and cache["checked"]:
        rows.append(
            [
                "storage caches: most held / budget (caches emptied)",
                f"{cache['most'] / 2**20:.2f} / {cache['budget'] / 2**20:.2f} MiB "
                f"({cache['evictions']:,})",
            ]
        )
    verdict = "PASS" if result["ok"] else "FAIL: " + "; ".join(result["problems"])
    if cache is not None and not cache["checked"]:
        verdict += (
            " (cache budget unchecked: the server reports no "
            + ", ".join(CACHE_FIGURES)
            + "; only RSS was checked)"
        )
    rows.append(["verdict", verdict])
    return table(rows, ["soak", "result"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--rooms", type=int, default=40)
    parser.add_argument("--rate", type=float, default=2.0, help="messages/s per connection")
    parser.add_argument("--churn", type=float, default=0.02, help="fraction replaced per second")
    parser.add_argument("--sample", type=float, default=5.0)
    parser.add_argument("--evict-every", type=float, default=2.0)
    parser.add_argument("--rss-tolerance", type=float, default=0.10)
    parser.add_argument("--awake", action="store_true", help="rooms never hibernate")
    parser.add_argument(
        "--storage-cache-bytes", type=int, default=0, help="cache budget (0: the mode's default)"
    )
    parser.add_argument("--json")
    args = parser.parse_args()
    result = run(
        args.seconds,
        args.connections,
        args.rooms,
        args.rate,
        args.churn,
        args.sample,
        args.evict_every,
        args.rss_tolerance,
        awake=args.awake,
        storage_cache_bytes=args.storage_cache_bytes,
    )
    print(report(result))
    for error in result["client_errors"]:
        print("client:", error)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
