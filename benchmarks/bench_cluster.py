"""Several worker processes against one: echo, calls between workers, sockets, failover, restart.

Each measure runs ``trio-durable serve benchmarks.cluster_app:app --workers N``
as a subprocess (the real CLI: a supervisor and N workers sharing one port
and one data directory) and compares it with the single-process figure of
the same run:

* **echo**: 100 clients on 100 objects, through ``--workers 2`` and
  ``--workers 1`` (the C load generator, ``benchmarks/cload.c``, in its own
  process; its CPU per message is reported beside the servers'): messages per
  second, and the servers' CPU time per message summed over every process
  of the cluster (supervisor included). Targets: CPU per message <= 1.25x
  one process, throughput >= 1.4x.
* **rpc**: object A calls object B ``--calls`` times, A and B in two workers,
  against both in one process: calls/s, p50, p99 (measured inside A).
* **hibernated**: ``--sockets`` hibernated connections over 2 workers
  (38,000: a process may hold 20,000 files here, so one process could not):
  RSS per connection, summed over the workers. Target <= 2 KiB.
* **failover**: ``kill -9`` of the worker that owns an object, then the time
  until the object answers again through the other worker; p50 and max over
  ``--kills`` kills (the supervisor restarts the killed worker each time).
* **restart**: ``--restart-sockets`` connected clients, a rolling restart
  (SIGHUP) while every client keeps sending: its duration, the connections
  closed and the messages lost (each client's every message must be
  answered).

Run::

    python -m benchmarks.bench_cluster                 # everything
    python -m benchmarks.bench_cluster --only echo rpc --quick
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks import _cload
from benchmarks._common import LoadGenerators, progress, table, write_json

ROOT = Path(__file__).resolve().parents[1]
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_URL = re.compile(r"serving \S+ on (http://[^\s]+)")
_READY = re.compile(r"worker (\d+) \(pid (\d+)\) serves")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Cluster:
    """``trio-durable serve benchmarks.cluster_app:app --workers N`` in a subprocess."""

    def __init__(self, workers: int, *extra: str) -> None:
        self.workers = workers
        self.data = tempfile.mkdtemp(prefix="td-bench-cluster-")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "trio_durable",
                "serve",
                "benchmarks.cluster_app:app",
                "--workers",
                str(workers),
                "--log-level",
                "info",
                "--port",
                "0",
                "--data-dir",
                self.data,
                *extra,
            ],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()
        self.port = int(self.wait_for(_URL)[1].rsplit(":", 1)[1])
        if workers > 1:
            self.wait_for(re.compile(r"took \d+ shard"), count=workers)

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._lock:
                self.lines.append(line)

    def log(self) -> str:
        with self._lock:
            return "".join(self.lines)

    def wait_for(
        self, pattern: re.Pattern[str], count: int = 1, timeout: float = 120
    ) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = list(pattern.finditer(self.log()))
            if len(found) >= count:
                return found[-1]
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{pattern.pattern!r} not seen:\n{self.log()[-3000:]}")

    def worker_pids(self) -> dict[int, int]:
        if self.workers == 1:  # one process serves: no supervisor
            return {0: self.process.pid}
        pids: dict[int, int] = {}
        for match in _READY.finditer(self.log()):
            pids[int(match[1])] = int(match[2])
        return pids

    def cpu_seconds(self) -> float:
        pids = {self.process.pid, *self.worker_pids().values()}
        return sum(_cpu_seconds(pid) for pid in pids)

    def rss_bytes(self) -> int:
        return sum(_rss_bytes(pid) for pid in self.worker_pids().values())

    def get(self, path: str, timeout: float = 30) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as r:
            return json.loads(r.read())

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.data, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------- measures


def measure_echo(workers: int, clients: int, seconds: float, repeats: int) -> dict[str, float]:
    """Closed-loop echo from the C generator, one object per client (``/echo/c0`` ...)."""
    with Cluster(workers) as cluster:
        _cload.echo(cluster.port, "/echo/c%d", clients, 1.0)  # warm up, and build it
        best_rate, best_cpu, generator = 0.0, float("inf"), float("inf")
        for _ in range(repeats):
            cpu0 = cluster.cpu_seconds()
            result = _cload.echo(cluster.port, "/echo/c%d", clients, seconds)
            cpu = cluster.cpu_seconds() - cpu0
            messages = max(1, result["messages"])
            best_rate = max(best_rate, result["rate"])
            best_cpu = min(best_cpu, cpu / messages * 1e6)
            generator = min(generator, result["generator_cpu_us_per_message"])
        return {
            "messages_per_second": best_rate,
            "cpu_us_per_message": best_cpu,
            "generator_cpu_us_per_message": generator,
        }


def measure_rpc(workers: int, calls: int) -> dict[str, Any]:
    with Cluster(workers) as cluster:
        pids: dict[int, str] = {}
        for n in range(64):
            pid = cluster.get(f"/where/o{n}")
            pids.setdefault(pid, f"o{n}")
            if len(pids) == workers:
                break
        names = list(pids.values())
        caller, callee = names[0], names[-1] if workers > 1 else f"{names[0]}-peer"
        cluster.get(f"/rpc/{caller}/{callee}/200")  # warm up the link
        result: dict[str, Any] = cluster.get(f"/rpc/{caller}/{callee}/{calls}", timeout=300)
        return result


def balanced_prefix(cluster: Cluster, objects: int, share: float) -> str:
    """An echo path prefix whose ``objects`` objects split over the workers within ``share``.

    Each connection lives in its object's owner, and a process may hold
    20,000 descriptors here: with 38,000 sockets over 2 workers, neither may
    own much more than half of the objects.
    """
    best, best_share = "", 1.0
    for attempt in range(40):
        prefix = f"b{attempt}-"
        owners: dict[int, int] = {}
        for n in range(objects):
            pid = cluster.get(f"/echo-where/{prefix}{n}")
            owners[pid] = owners.get(pid, 0) + 1
        largest = max(owners.values()) / objects
        if len(owners) == cluster.workers and largest < best_share:
            best, best_share = prefix, largest
        if best_share <= share:
            break
    progress(f"objects under /echo/{best}: largest worker share {best_share:.1%}")
    return best


def measure_hibernated(sockets: int) -> dict[str, float]:
    # Each worker may hold up to 20,000 connections (the default is 10,000).
    with (
        Cluster(2, "--max-connections", "20000") as cluster,
        LoadGenerators(sockets, per_process=15_000) as gen,
    ):
        objects = 1000
        prefix = balanced_prefix(cluster, objects, 19_400 / max(sockets, 19_400))
        time.sleep(2)
        before = cluster.rss_bytes()
        connected = gen.connect(cluster.port, sockets, objects, f"/echo/{prefix}", sources=4)
        time.sleep(5)  # every connection parks (park_after is 1 s)
        after = cluster.rss_bytes()
        per_worker = {slot: _rss_bytes(pid) for slot, pid in sorted(cluster.worker_pids().items())}
        return {
            "connected": connected["connected"],
            "failed": connected["failed"],
            "kib_per_connection": (after - before) / max(1, connected["connected"]) / 1024,
            "rss_mib_per_worker": [round(v / 2**20, 1) for v in per_worker.values()],
        }


def measure_failover(kills: int) -> dict[str, float]:
    times = []
    with Cluster(2) as cluster:
        for n in range(kills):
            name = f"victim{n}"
            owner = cluster.get(f"/hit/{name}")["pid"]
            os.kill(owner, signal.SIGKILL)
            started = time.monotonic()
            while True:
                try:
                    answer = cluster.get(f"/hit/{name}", timeout=15)
                    if answer["pid"] != owner:
                        break
                except Exception:  # refused, reset or 500 while the shard moves
                    time.sleep(0.02)
            times.append(time.monotonic() - started)
            # The supervisor restarts the killed worker; wait until it holds shards again.
            cluster.wait_for(re.compile(r"took \d+ shard"), count=2 + 2 * (n + 1))
    return {
        "p50_seconds": statistics.median(times),
        "max_seconds": max(times),
        "kills": kills,
    }


def measure_restart(sockets: int) -> dict[str, Any]:
    with Cluster(2) as cluster, LoadGenerators(sockets, per_process=15_000) as gen:
        connected = gen.connect(cluster.port, sockets, 1000, "/echo/", sources=4)
        time.sleep(2)
        old = set(cluster.worker_pids().values())
        started = time.monotonic()
        cluster.process.send_signal(signal.SIGHUP)
        storms = []
        while True:
            storms.append(gen.each(cmd="storm", at=time.monotonic() + 0.2, spread=1.0, timeout=60))
            if "rolling restart done" in cluster.log():
                break
        duration = time.monotonic() - started
        storms.append(gen.each(cmd="storm", at=time.monotonic() + 0.2, spread=1.0, timeout=60))
        sent = sum(r["sent"] for round_ in storms for r in round_)
        answered = sum(r["answered"] for round_ in storms for r in round_)
        stats = gen.each(cmd="stats")
        new = set(cluster.worker_pids().values())
        return {
            "connected": connected["connected"],
            "duration_seconds": duration,
            "rounds": len(storms),
            "messages_sent": sent,
            "messages_lost": sent - answered,
            "connections_closed": sum(s["lost"] for s in stats),
            "workers_replaced": len(new - old),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", nargs="*", choices=["echo", "rpc", "hibernated", "failover", "restart"]
    )
    parser.add_argument("--quick", action="store_true", help="shorter runs, fewer sockets")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()
    only = set(args.only or ["echo", "rpc", "hibernated", "failover", "restart"])
    quick = args.quick
    results: dict[str, Any] = {}
    rows: list[list[str]] = []
    if "echo" in only:
        progress("echo: 100 clients on 100 objects, 1 then 2 workers")
        one = measure_echo(1, 100, 2 if quick else 4, 2 if quick else 3)
        two = measure_echo(2, 100, 2 if quick else 4, 2 if quick else 3)
        results["echo"] = {"workers_1": one, "workers_2": two}
        rows.append(
            [
                "echo, 1 worker: msgs/s | CPU µs/msg",
                f"{one['messages_per_second']:,.0f}",
                f"{one['cpu_us_per_message']:.1f}",
                f"generator {one['generator_cpu_us_per_message']:.1f} µs/msg",
            ]
        )
        rows.append(
            [
                "echo, 2 workers: msgs/s | CPU µs/msg",
                f"{two['messages_per_second']:,.0f}",
                f"{two['cpu_us_per_message']:.1f}",
                f"{two['messages_per_second'] / one['messages_per_second']:.2f}x rate, "
                f"{two['cpu_us_per_message'] / one['cpu_us_per_message']:.2f}x CPU",
            ]
        )
    if "rpc" in only:
        calls = 2000 if quick else 10_000
        progress(f"rpc: {calls:,} calls, in one process then across two")
        local = measure_rpc(1, calls)
        remote = measure_rpc(2, calls)
        results["rpc"] = {"in_process": local, "across_workers": remote}
        for label, r in (("rpc in one process", local), ("rpc across two workers", remote)):
            rows.append(
                [
                    f"{label}: calls/s | p50 | p99 ms",
                    f"{r['calls_per_second']:,.0f}",
                    f"{r['p50_ms']:.3f} | {r['p99_ms']:.3f}",
                    "caller and callee apart" if r["caller"] != r["callee"] else "same process",
                ]
            )
    if "hibernated" in only:
        sockets = 4000 if quick else 38_000
        progress(f"hibernated: {sockets:,} connections over 2 workers")
        hib = measure_hibernated(sockets)
        results["hibernated"] = hib
        rows.append(
            [
                f"{hib['connected']:,} hibernated sockets, 2 workers: KiB/conn",
                f"{hib['kib_per_connection']:.2f}",
                f"failed {hib['failed']}",
                f"RSS MiB per worker {hib['rss_mib_per_worker']}",
            ]
        )
    if "failover" in only:
        kills = 3 if quick else 10
        progress(f"failover: {kills} kills")
        failover = measure_failover(kills)
        results["failover"] = failover
        rows.append(
            [
                f"failover after kill -9 ({kills} kills): p50 | max s",
                f"{failover['p50_seconds']:.2f}",
                f"{failover['max_seconds']:.2f}",
                "",
            ]
        )
    if "restart" in only:
        sockets = 1000 if quick else 10_000
        progress(f"rolling restart with {sockets:,} connected clients")
        restart = measure_restart(sockets)
        results["restart"] = restart
        rows.append(
            [
                f"rolling restart, {restart['connected']:,} clients: seconds",
                f"{restart['duration_seconds']:.1f}",
                f"closed {restart['connections_closed']}, lost {restart['messages_lost']}"
                f" of {restart['messages_sent']:,}",
                f"{restart['workers_replaced']} workers replaced",
            ]
        )
    print(table(rows, ["measure", "value", "", "notes"]))
    if args.json:
        write_json(args.json, results)


if __name__ == "__main__":
    main()
