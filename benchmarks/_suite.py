"""``python -m benchmarks``: every benchmark, one summary table, results as JSON.

Usage::

    python -m benchmarks                      # quick mode, a few minutes
    python -m benchmarks --full               # full sizes (19,000 connections, 10-minute soak)
    python -m benchmarks --only echo wake     # some of them
    python -m benchmarks --json out.json      # default: benchmarks/results/<time>.json
    python -m benchmarks compare old.json new.json

Our figures are printed next to the baselines measured in the same run, with
ratios and the targets each figure must meet. The network benchmarks each start their own
server and load generator processes (see ``benchmarks/_common.py``); the
older single-process scripts run as subprocesses and their tables are kept
verbatim in the JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks._common import RESULTS_DIR, ROOT, table, write_json

Row = dict[str, Any]

#: Activations per second (cold calls to new IDs) the runtime must reach.
ACTIVATIONS_PER_SECOND = 20_000.0
#: p99 latency of a wake storm (each hibernated connection sends one message,
#: spread over one second; the goal is 10,000 of them in one process).
WAKE_STORM_P99_MS = 1000.0


def _run_script(argv: list[str], timeout: float = 900) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr[-2000:]}")
    return {"command": "python " + " ".join(argv), "output": done.stdout}


# ------------------------------------------------------------------ the benchmarks


def bench_rpc(full: bool) -> tuple[dict[str, Any], list[Row]]:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / ".rpc.json"
    argv = ["-m", "benchmarks.bench_rpc", "--json", str(out)]
    if not full:
        argv.insert(2, "--quick")
    result = _run_script(argv)
    figures = json.loads(out.read_text())
    out.unlink()
    result["figures"] = figures
    base = figures.get("plain await (baseline)")
    rows = [
        _row(
            "rpc",
            label,
            rate,
            base,
            "calls/s",
            higher_is_better=True,
            baseline_name="plain await",
            # Cold calls to new IDs: each builds an object and runs one call on it.
            absolute_target=ACTIVATIONS_PER_SECOND if label.startswith("activations") else None,
        )
        for label, rate in figures.items()
        if label != "plain await (baseline)"
    ]
    return result, rows


def bench_codec(full: bool) -> tuple[dict[str, Any], list[Row]]:
    return _run_script(["benchmarks/bench_codec.py", *([] if full else ["--quick"])]), []


def bench_values(full: bool) -> tuple[dict[str, Any], list[Row]]:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / ".values.json"
    argv = ["benchmarks/bench_values.py", "--json", str(out), *([] if full else ["--quick"])]
    result = _run_script(argv)
    figures = json.loads(out.read_text())
    out.unlink()
    result["figures"] = figures
    rows = []
    for label, rates in figures["round_trips"].items():
        for baseline in ("json", "pickle"):
            if baseline in rates and "ours" in rates:
                rows.append(
                    _row(
                        "values",
                        f"encode+decode/s, {label}, vs {baseline}",
                        rates["ours"],
                        rates[baseline],
                        "/s",
                        True,
                        baseline,
                    )
                )
    for label, rate in figures["copy"].items():
        rows.append(_row("values", f"RPC copy/s, {label}", rate, None, "/s", True, ""))
    return result, rows


def bench_storage(full: bool) -> tuple[dict[str, Any], list[Row]]:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / ".storage.json"
    # 1,000 objects in quick mode too: the figure the target is about.
    argv = ["benchmarks/bench_storage.py", "--json", str(out)]
    argv += ["--writes", "20" if full else "10", "--alarms", "10000" if full else "2000"]
    result = _run_script(argv)
    f = json.loads(out.read_text())
    out.unlink()
    result["figures"] = f
    rows = []
    # Without a suffix: tune_gc off (a library's default); "_tuned": tune_gc
    # on, as `trio-durable serve` runs.
    for per, base, unit in (("", "baseline", "writes/s"), ("_per_cpu", "baseline_per_cpu", "writes/CPU-s")):
        for label in ("thread", "inline", "inline_tuned"):
            if f"many_{label}{per}" not in f:
                continue
            rows.append(
                _row(
                    "storage",
                    f"1,000 objects, acknowledged {unit} ({label.replace('_', ', ')} commits), vs plain sqlite3",
                    f[f"many_{label}{per}"],
                    f[base],
                    unit,
                    True,
                    "sqlite3, 1 commit/write",
                    target=1.0,
                )
            )
            rows.append(
                _row(
                    "storage",
                    f"1 object sequential, {unit} ({label.replace('_', ', ')} commits), vs plain sqlite3",
                    f[f"one_{label}{per}"],
                    f[base],
                    unit,
                    True,
                    "sqlite3, 1 commit/write",
                    target=0.5,
                )
            )
    return result, rows


def bench_postgres(full: bool) -> tuple[dict[str, Any], list[Row]]:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / ".postgres.json"
    argv = ["benchmarks/bench_postgres.py", "--json", str(out)]
    if not full:
        argv += ["--objects", "300", "--writes", "10", "--baseline-writes", "1000"]
    result = _run_script(argv)
    figures = json.loads(out.read_text())
    out.unlink()
    result["figures"] = figures
    rows = [
        _row(
            "postgres",
            f"acknowledged writes/s, {figures['objects']:,.0f} objects, vs 1 commit per write",
            figures["many_objects"],
            figures["baseline"],
            "writes/s",
            True,
            "psycopg loop",
            target=3.0,
        )
    ]
    return result, rows


def bench_cluster(full: bool) -> tuple[dict[str, Any], list[Row]]:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / ".cluster.json"
    argv = ["-m", "benchmarks.bench_cluster", "--json", str(out)]
    if not full:
        argv.append("--quick")
    result = _run_script(argv, timeout=1800)
    f = json.loads(out.read_text())
    out.unlink()
    result["figures"] = f
    one, two = f["echo"]["workers_1"], f["echo"]["workers_2"]
    local, remote = f["rpc"]["in_process"], f["rpc"]["across_workers"]
    hib, failover, restart = f["hibernated"], f["failover"], f["restart"]
    rows = [
        _row("cluster", "echo msgs/s, 100 clients, --workers 2 vs 1", two["messages_per_second"],
             one["messages_per_second"], "msg/s", True, "--workers 1", target=1.4),
        _row("cluster", "echo server CPU us/msg (all processes), --workers 2 vs 1",
             two["cpu_us_per_message"], one["cpu_us_per_message"], "us", False, "--workers 1",
             target=1.25),
        _row("cluster", "RPC calls/s between objects in two workers, vs one process",
             remote["calls_per_second"], local["calls_per_second"], "calls/s", True,
             "one process"),
        _row("cluster", "RPC p99 ms between objects in two workers, vs one process",
             remote["p99_ms"], local["p99_ms"], "ms", False, "one process"),
        # The target is for 38,000 connections (--full); at the quick run's
        # 4,000 the processes' fixed memory is a larger share of each.
        _row("cluster", f"RSS KiB per hibernated connection, {hib['connected']:,} over 2 workers",
             hib["kib_per_connection"], None, "KiB", False, "",
             absolute_target=2.0 if full else None),
        _row("cluster", "failover after kill -9, max s", failover["max_seconds"], None, "s",
             False, "", absolute_target=5.0),
        _row("cluster", f"rolling restart, {restart['connected']:,} clients: closes + lost",
             restart["connections_closed"] + restart["messages_lost"], None, "", False, "",
             absolute_target=0),
    ]  # fmt: skip
    return result, rows


def bench_chaos(full: bool) -> tuple[dict[str, Any], list[Row]]:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / ".chaos.json"
    argv = [sys.executable, "benchmarks/chaos.py", "--json", str(out)]
    if not full:
        argv.append("--quick")
    # Exit 1 means a violation: its figures are the result, not a crash.
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if not out.exists():
        raise RuntimeError(f"{' '.join(argv[1:])} exited {done.returncode}: {done.stderr[-2000:]}")
    f = json.loads(out.read_text())
    out.unlink()
    result = {"command": "python " + " ".join(argv[1:]), "output": done.stdout, "figures": f}
    violations = sum(f["violations"].values())
    kills = f["failover_kill"]
    rows = [
        _row("chaos", f"{f['seconds']:.0f} s, {f['faults']['kill']} kills + "
             f"{f['faults']['stop']} stops: violations (lost, double activations, 500s, ...)",
             violations, None, "", False, "", absolute_target=0),
        _row("chaos", "alarms fired / due", f["alarms_fired"], f["alarms_due"], "", True,
             "due", target=1.0),
        _row("chaos", "failover after kill -9, max s, vs the lease",
             max(kills) if kills else 0.0, f["lease_seconds"], "s", False, "lease"),
    ]  # fmt: skip
    return result, rows


def bench_idle(full: bool) -> tuple[dict[str, Any], list[Row]]:
    return _run_script(["benchmarks/bench_idle.py", *([] if full else ["--quick"])]), []


def bench_echo(full: bool) -> tuple[dict[str, Any], list[Row]]:
    from benchmarks import bench_echo as m

    result = m.run(quick=not full)
    servers = result["servers"]
    rows = []
    for key in ("clients_1", "clients_100"):
        clients = key.split("_")[1]
        td = servers["td"][key]
        tw = servers["tw"][key]
        rows.append(
            _row(
                "echo",
                f"messages/s, {clients} client(s), vs trio-websocket",
                td["rate"],
                tw["rate"],
                "msg/s",
                True,
                "trio-websocket",
                target=1.5,
            )
        )
        rows.append(
            _row(
                "echo",
                f"server CPU us/message, {clients} client(s), vs trio-websocket",
                td["cpu_us_per_message"],
                tw["cpu_us_per_message"],
                "us",
                False,
                "trio-websocket",
            )
        )
        for other, name in (("ws", "websockets"), ("raw", "raw Trio TCP")):
            rows.append(
                _row(
                    "echo",
                    f"messages/s, {clients} client(s), vs {name}",
                    td["rate"],
                    servers[other][key]["rate"],
                    "msg/s",
                    True,
                    name,
                    target=1.3 if other == "ws" and clients == "100" else None,
                )
            )
        rows.append(
            _row(
                "echo",
                f"server CPU us/message, {clients} client(s), vs raw Trio TCP",
                td["cpu_us_per_message"],
                servers["raw"][key]["cpu_us_per_message"],
                "us",
                False,
                "raw Trio TCP",
                target=1.5 if clients == "100" else None,
            )
        )
        cecho = servers.get("cecho")
        if cecho:
            rows.append(
                _row(
                    "echo",
                    f"generator ceiling (C echo server), {clients} client(s), vs raw Trio TCP",
                    cecho[key]["rate"],
                    servers["raw"][key]["rate"],
                    "msg/s",
                    True,
                    "raw Trio TCP",
                )
            )
    return result, rows


def bench_broadcast(full: bool) -> tuple[dict[str, Any], list[Row]]:
    from benchmarks import bench_broadcast as m

    result = m.run(quick=not full)
    s = result["servers"]
    td = s["td"]
    rows = [
        _row(
            "broadcast",
            "1,000 x 64 B, server loop ms (median), vs trio-websocket",
            td["loop_ms_median"],
            s["tw"]["loop_ms_median"],
            "ms",
            False,
            "trio-websocket",
            target=0.2,
        ),
        _row(
            "broadcast",
            "1,000 x 64 B, server loop ms (best), vs trio-websocket",
            td["loop_ms_best"],
            s["tw"]["loop_ms_best"],
            "ms",
            False,
            "trio-websocket",
            target=0.2,
        ),
        _row(
            "broadcast",
            "1,000 x 64 B, until last socket got it ms, vs trio-websocket",
            td["trip_ms_median"],
            s["tw"]["trip_ms_median"],
            "ms",
            False,
            "trio-websocket",
        ),
        _row(
            "broadcast",
            "1,000 x 64 B, server loop ms, vs websockets",
            td["loop_ms_median"],
            s["ws"]["loop_ms_median"],
            "ms",
            False,
            "websockets",
        ),
        _row(
            "broadcast",
            "1,000 x 64 B, server loop ms, vs raw Trio TCP",
            td["loop_ms_median"],
            s["raw"]["loop_ms_median"],
            "ms",
            False,
            "raw Trio TCP",
        ),
    ]
    return result, rows


def bench_wake(full: bool) -> tuple[dict[str, Any], list[Row]]:
    from benchmarks import bench_wake as m

    result = m.run(quick=not full)
    s = result["servers"]
    hib = s["td_hibernated"]
    rows = [
        _row(
            "wake",
            "hibernated -> reply p50 ms, vs trio-websocket idle",
            hib["p50_ms"],
            s["tw_idle"]["p50_ms"],
            "ms",
            False,
            "trio-websocket idle",
        ),
        _row(
            "wake",
            "hibernated -> reply p99 ms (all rounds), vs trio-websocket idle",
            hib["p99_ms"],
            s["tw_idle"]["p99_ms"],
            "ms",
            False,
            "trio-websocket idle",
            absolute_target=2.0,
        ),
        _row(
            "wake",
            "hibernated -> reply p99 ms (best round), vs trio-websocket idle",
            hib["best_round_p99_ms"],
            s["tw_idle"]["best_round_p99_ms"],
            "ms",
            False,
            "trio-websocket idle",
            absolute_target=2.0,
        ),
        _row(
            "wake",
            "server CPU us per wake (hibernated + evicted), vs trio_durable awake",
            hib["server_cpu_us_per_wake"],
            s["td_awake"]["server_cpu_us_per_wake"],
            "us",
            False,
            "trio_durable awake",
            target=1.3,
        ),
        _row(
            "wake",
            "server CPU per wake / per awake message, median of interleaved pairs",
            result["wake_vs_awake"]["median_ratio"],
            1.0,
            "x",
            False,
            "trio_durable awake = 1",
            target=1.3,
        ),
        _row(
            "wake",
            "hibernated -> reply p99 ms, vs trio_durable awake",
            hib["p99_ms"],
            s["td_awake"]["p99_ms"],
            "ms",
            False,
            "trio_durable awake",
        ),
    ]
    return result, rows


def bench_fairness(full: bool) -> tuple[dict[str, Any], list[Row]]:
    from benchmarks import bench_fairness as m

    result = m.run(quick=not full)
    s = result["servers"]
    td, tw = s["td"], s["tw"]
    n = result["flooders"]
    rows = [
        _row(
            "fairness",
            f"bystander echo p50 ms, {n} flooders, vs trio-websocket",
            td["echo"]["p50_ms"],
            tw["echo"]["p50_ms"],
            "ms",
            False,
            "trio-websocket",
            target=2.0,
        ),
        _row(
            "fairness",
            f"bystander echo p99 ms, {n} flooders, vs trio-websocket",
            td["echo"]["p99_ms"],
            tw["echo"]["p99_ms"],
            "ms",
            False,
            "trio-websocket",
        ),
        _row(
            "fairness",
            f"new handshake p50 ms, {n} flooders, vs trio-websocket",
            td["handshake"]["p50_ms"],
            tw["handshake"]["p50_ms"],
            "ms",
            False,
            "trio-websocket",
            target=2.0,
        ),
        _row(
            "fairness",
            f"flood messages/s echoed, {n} flooders, vs trio-websocket",
            td["flood_echoed_per_s"],
            tw["flood_echoed_per_s"],
            "msg/s",
            True,
            "trio-websocket",
        ),
    ]
    return result, rows


def bench_scale(full: bool) -> tuple[dict[str, Any], list[Row]]:
    from benchmarks import bench_scale as m

    plot = ROOT / "docs" / "scale_rss.png" if full else RESULTS_DIR / "scale_rss_quick.png"
    result = m.run(quick=not full, plot_path=plot)
    c = result["cases"]
    tw = c["tw"]
    n = result["connections"]
    rows = []
    for case in ("td_many", "td_one", "td_awake"):
        rows.append(
            _row(
                "scale",
                f"RSS bytes/connection at {n:,}, {m.CASES[case]}",
                c[case]["rss_per_connection"],
                tw["rss_per_connection"],
                "B",
                False,
                "trio-websocket",
            )
        )
    for case in ("td_many", "td_one"):
        st = c[case]["storm"]
        rows.append(
            _row(
                "scale",
                # Each connection sends one message, spread over one second:
                # n wakes within 1 s in one server process. (The label is
                # kept as it was, so that `compare` pairs old results.)
                f"wake storm p99 ms, {n:,} connections, {m.CASES[case]}",
                st["p99_ms"],
                tw["storm"]["p99_ms"],
                "ms",
                False,
                "trio-websocket (awake)",
                absolute_target=WAKE_STORM_P99_MS,
            )
        )
        rows.append(
            _row(
                "scale",
                f"wake storm unanswered, {m.CASES[case]}",
                st["sent"] - st["answered"],
                tw["storm"]["sent"] - tw["storm"]["answered"],
                "",
                False,
                "trio-websocket",
                absolute_target=0.0,
            )
        )
    rows.append(
        _row(
            "scale",
            f"connect all {n:,}, seconds, 1,000 objects",
            c["td_many"]["connect_seconds"],
            tw["connect_seconds"],
            "s",
            False,
            "trio-websocket",
        )
    )
    rows.append(
        _row(
            "scale",
            "server CPU us/connection (connect), 1,000 objects",
            c["td_many"]["server_cpu_us_per_connection"],
            tw["server_cpu_us_per_connection"],
            "us",
            False,
            "trio-websocket",
        )
    )
    bc = c["td_one"].get("broadcast")
    if bc:
        rows.append(
            _row(
                "scale",
                f"broadcast 64 B to {n:,} sockets of one object, loop ms",
                bc["loop_ms_median"],
                None,
                "ms",
                False,
                "",
            )
        )
    return result, rows


def bench_soak(full: bool) -> tuple[dict[str, Any], list[Row]]:
    from benchmarks import bench_soak as m

    result = m.run(seconds=600.0 if full else 40.0, sample=5.0 if full else 2.0)
    client = result["client"]
    rows = [
        _row(
            "soak",
            f"{result['seconds']:.0f} s: lost + reordered + own missing",
            client["gaps"] + client["reorders"] + client["own_missing"],
            None,
            "",
            False,
            "",
            absolute_target=0.0,
        ),
        _row(
            "soak",
            "RSS growth after warm-up, MiB",
            result["growth"].get("rss_growth_mib", math.nan),
            None,
            "MiB",
            False,
            "",
            absolute_target=result["growth"].get("rss_allowed_mib"),
        ),
        _row(
            "soak",
            "verdict (1 = pass)",
            1.0 if result["ok"] else 0.0,
            None,
            "",
            True,
            "",
            absolute_target=1.0,
        ),
    ]
    return result, rows


BENCHMARKS: dict[str, Callable[[bool], tuple[dict[str, Any], list[Row]]]] = {
    "rpc": bench_rpc,
    "codec": bench_codec,
    "values": bench_values,
    "storage": bench_storage,
    "postgres": bench_postgres,
    "cluster": bench_cluster,
    "chaos": bench_chaos,
    "idle": bench_idle,
    "echo": bench_echo,
    "broadcast": bench_broadcast,
    "wake": bench_wake,
    "fairness": bench_fairness,
    "scale": bench_scale,
    "soak": bench_soak,
}


# ------------------------------------------------------------------ summary rows


def _row(
    bench: str,
    measure: str,
    ours: float,
    baseline: float | None,
    unit: str,
    higher_is_better: bool,
    baseline_name: str,
    target: float | None = None,
    absolute_target: float | None = None,
) -> Row:
    """One summary line. ``ratio`` is ours/baseline; ``target`` applies to that
    ratio (>= when higher is better, <= otherwise), ``absolute_target`` to ours."""
    ratio = ours / baseline if baseline else None
    met: bool | None = None
    if target is not None and ratio is not None:
        met = ratio >= target if higher_is_better else ratio <= target
    if absolute_target is not None:
        met = ours >= absolute_target if higher_is_better else ours <= absolute_target
    return {
        "bench": bench,
        "measure": measure,
        "ours": ours,
        "baseline": baseline,
        "baseline_name": baseline_name,
        "unit": unit,
        "ratio": ratio,
        "higher_is_better": higher_is_better,
        "target": target if target is not None else absolute_target,
        "target_is_ratio": target is not None,
        "met": met,
    }


def _num(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def summary_table(rows: list[Row]) -> str:
    lines = []
    for r in rows:
        if r["target"] is None:
            goal = ""
        else:
            sign = ">=" if r["higher_is_better"] else "<="
            goal = f"{sign} {_num(r['target'])}{'x' if r['target_is_ratio'] else ''}"
        met = {True: "yes", False: "NO", None: ""}[r["met"]]
        lines.append(
            [
                r["bench"],
                r["measure"],
                f"{_num(r['ours'])} {r['unit']}".strip(),
                f"{_num(r['baseline'])} {r['unit']}".strip() if r["baseline"] is not None else "-",
                f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-",
                goal,
                met,
            ]
        )
    return table(lines, ["bench", "measure", "ours", "baseline", "ours/baseline", "target", "met"])


# ------------------------------------------------------------------ compare


def compare(old_path: str, new_path: str) -> str:
    old = json.loads(Path(old_path).read_text())
    new = json.loads(Path(new_path).read_text())
    before = {(r["bench"], r["measure"]): r for r in old.get("summary", [])}
    lines = []
    for r in new.get("summary", []):
        o = before.pop((r["bench"], r["measure"]), None)
        if o is None:
            lines.append([r["bench"], r["measure"], "-", _num(r["ours"]), "new", ""])
            continue
        change = (r["ours"] - o["ours"]) / o["ours"] * 100 if o["ours"] else math.nan
        better = change > 0 if r["higher_is_better"] else change < 0
        verdict = "" if math.isnan(change) or abs(change) < 5 else ("better" if better else "WORSE")
        lines.append(
            [
                r["bench"],
                r["measure"],
                _num(o["ours"]),
                _num(r["ours"]),
                f"{change:+.1f}%" if not math.isnan(change) else "-",
                verdict,
            ]
        )
    for (bench, measure), o in before.items():
        lines.append([bench, measure, _num(o["ours"]), "-", "gone", ""])
    head = (
        f"old: {old_path} ({old.get('started', '?')}, {old.get('mode', '?')})\n"
        f"new: {new_path} ({new.get('started', '?')}, {new.get('mode', '?')})\n"
        "changes under 5% are not flagged (this machine is shared and noisy)\n\n"
    )
    return head + table(lines, ["bench", "measure", "old", "new", "change", ""])


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["compare"]:
        parser = argparse.ArgumentParser(prog="python -m benchmarks compare")
        parser.add_argument("old")
        parser.add_argument("new")
        args = parser.parse_args(argv[1:])
        print(compare(args.old, args.new))
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--full", action="store_true", help="full sizes (long: scale at 19,000, 10-min soak)"
    )
    parser.add_argument("--only", nargs="*", choices=list(BENCHMARKS), help="run only these")
    parser.add_argument("--skip", nargs="*", default=[], choices=list(BENCHMARKS))
    parser.add_argument("--json", help="results file (default: benchmarks/results/<time>.json)")
    args = parser.parse_args(argv)
    names = [n for n in (args.only or list(BENCHMARKS)) if n not in args.skip]
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    out_path = (
        Path(args.json) if args.json else RESULTS_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    )
    results: dict[str, Any] = {
        "started": started,
        "mode": "full" if args.full else "quick",
        "python": sys.version.split()[0],
        "benchmarks": {},
        "summary": [],
        "failed": [],
    }
    t0 = time.monotonic()
    for i, name in enumerate(names, 1):
        print(f"[{i}/{len(names)}] {name} ... ({time.monotonic() - t0:.0f} s so far)", flush=True)
        began = time.monotonic()
        try:
            data, rows = BENCHMARKS[name](args.full)
        except Exception as exc:
            traceback.print_exc()
            results["failed"].append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        data["seconds"] = time.monotonic() - began
        results["benchmarks"][name] = data
        results["summary"].extend(rows)
        print(f"[{i}/{len(names)}] {name} done in {data['seconds']:.0f} s", flush=True)
        write_json(out_path, results)  # keep what we have if a later one dies
    results["seconds"] = time.monotonic() - t0
    write_json(out_path, results)
    print()
    print(summary_table(results["summary"]))
    for name in names:
        data = results["benchmarks"].get(name)
        if data and "output" in data:
            print(f"\n## {name}: {data['command']}\n{data['output'].rstrip()}")
    if results["failed"]:
        print("\nFAILED:", *results["failed"], sep="\n  ")
    print(f"\nresults: {out_path}  ({results['seconds']:.0f} s)")
    soak = results["benchmarks"].get("soak")
    return 1 if results["failed"] or (soak is not None and not soak["ok"]) else 0
