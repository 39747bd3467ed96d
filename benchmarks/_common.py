"""Helpers shared by the benchmark scripts: processes, JSON-line control, statistics.

Every network benchmark runs three processes: the orchestrator (the script
you start), a *server* process (``benchmarks._servers``) and one or more
*load generator* processes (``benchmarks.loadgen``). The orchestrator talks
to the other two with one JSON object per line on their stdin/stdout; it
does nothing while they work, so on a 2-core machine the server and the load
generator each get a core.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import select
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def raise_fd_limit(needed: int) -> int:
    """Raise the soft fd limit towards ``needed``; return the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def fd_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank; nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


def summary_ms(latencies_s: Iterable[float]) -> dict[str, float]:
    values = sorted(latencies_s)
    return {
        "count": len(values),
        "p50_ms": round(percentile(values, 50) * 1e3, 3),
        "p99_ms": round(percentile(values, 99) * 1e3, 3),
        "max_ms": round(values[-1] * 1e3, 3) if values else math.nan,
    }


class ProtocolError(RuntimeError):
    pass


class JsonProcess:
    """A child process driven by JSON lines: one command in, one reply out."""

    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # the child's errors show on our stderr
            text=True,
            bufsize=1,
            cwd=ROOT,
        )
        self._buffered = ""

    def send(self, **command: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def ready(self) -> bool:
        """True when a reply line can be read without waiting."""
        assert self.proc.stdout is not None
        if "\n" in self._buffered:
            return True
        readable, _, _ = select.select([self.proc.stdout], [], [], 0)
        return bool(readable)

    def receive(self, timeout: float = 600.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while "\n" not in self._buffered:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no reply within {timeout:.0f} s")
            readable, _, _ = select.select([fd], [], [], min(left, 1.0))
            if not readable:
                if self.proc.poll() is not None:
                    raise ProtocolError(f"{self.name} exited with {self.proc.returncode}")
                continue
            chunk = os.read(fd, 1 << 20).decode()
            if not chunk:
                raise ProtocolError(f"{self.name} exited with {self.proc.wait()}")
            self._buffered += chunk
        line, self._buffered = self._buffered.split("\n", 1)
        try:
            reply: dict[str, Any] = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ProtocolError(f"{self.name} said {line[:300]!r}") from exc
        if "error" in reply:
            raise ProtocolError(f"{self.name}: {reply['error']}")
        return reply

    def call(self, timeout: float = 600.0, **command: Any) -> dict[str, Any]:
        self.send(**command)
        return self.receive(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send(cmd="quit")
                self.proc.wait(timeout=20)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                self.proc.kill()
                self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

    def __enter__(self) -> JsonProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_server(kind: str, **options: Any) -> tuple[JsonProcess, int]:
    """Start a server process (see ``benchmarks._servers``); return it and its port."""
    argv = ["-m", "benchmarks._servers", f"--kind={kind}"]
    for key, value in options.items():
        argv.append(f"--{key.replace('_', '-')}={value}")
    server = JsonProcess(f"server[{kind}]", argv)
    hello = server.receive(timeout=60)
    return server, int(hello["port"])


class LoadGenerators:
    """One or more load generator processes acting as one.

    A process can hold at most ``per_process`` connections (the fd limit);
    connection ``i`` of the whole set lives in process ``i // per_process``.
    Commands go to every process; replies are merged by the caller's rule.
    """

    def __init__(self, connections: int, per_process: int = 18_000) -> None:
        self.per_process = per_process
        count = max(1, math.ceil(connections / per_process))
        self.procs = [
            JsonProcess(f"loadgen[{i}]", ["-m", "benchmarks.loadgen"]) for i in range(count)
        ]
        for proc in self.procs:
            proc.receive(timeout=60)  # hello

    def connect(
        self, port: int, count: int, objects: int, prefix: str, *, first: int = 0, **extra: Any
    ) -> dict[str, Any]:
        """Open connections ``first`` .. ``first+count-1`` (global numbering)."""
        started = time.monotonic()
        jobs = []
        index = first
        end = first + count
        while index < end:
            proc_no = index // self.per_process
            upto = min(end, (proc_no + 1) * self.per_process)
            proc = self.procs[proc_no]
            proc.send(
                cmd="connect",
                port=port,
                start=index,
                count=upto - index,
                objects=objects,
                prefix=prefix,
                **extra,
            )
            jobs.append(proc)
            index = upto
        replies = [proc.receive() for proc in jobs]
        return {
            "connected": sum(r["connected"] for r in replies),
            "failed": sum(r["failed"] for r in replies),
            "errors": [e for r in replies for e in r["errors"]][:5],
            "seconds": time.monotonic() - started,
        }

    def each(self, timeout: float = 600.0, **command: Any) -> list[dict[str, Any]]:
        for proc in self.procs:
            proc.send(**command)
        return [proc.receive(timeout) for proc in self.procs]

    def close(self) -> None:
        for proc in self.procs:
            proc.close()

    def __enter__(self) -> LoadGenerators:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_until(
    server: JsonProcess, predicate: Any, timeout: float, interval: float = 0.2
) -> dict[str, Any]:
    """Poll the server's ``stats`` until ``predicate(stats)``; return the last stats."""
    deadline = time.monotonic() + timeout
    while True:
        stats = server.call(cmd="stats")
        if predicate(stats) or time.monotonic() > deadline:
            return stats
        time.sleep(interval)


def progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


def table(rows: list[list[str]], header: list[str]) -> str:
    """A Markdown table (also readable in a terminal)."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "| " + " | ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)) + " |",
        "| " + " | ".join("-" * w for w in widths) + " |",
    ]
    for row in rows:
        lines.append(
            "| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        )
    return "\n".join(lines)
