"""The C echo load generator (``benchmarks/cload.c``): building it and running it.

The Python load generator (``benchmarks/loadgen.py``) spends more CPU per
echoed message than a lean server does, so in a closed-loop echo it, not the
server, set the pace. ``cload`` does the same closed loop in C (one epoll
loop, a prepared masked frame, frames counted without copying) and reports its
own CPU time, so every echo figure comes with the generator's cost per
message next to the server's. ``cload server`` is a bare C echo server:
against it the generator shows its own ceiling.

The binary is built with the system C compiler on first use, into
``benchmarks/results/`` (ignored by git). Nothing third-party is involved.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from benchmarks._common import RESULTS_DIR, ROOT

SOURCE = ROOT / "benchmarks" / "cload.c"


def binary() -> Path:
    """The built generator, (re)built when the source is newer.

    Raises:
        RuntimeError: No C compiler, or the build failed.
    """
    out = RESULTS_DIR / "cload"
    if out.exists() and out.stat().st_mtime >= SOURCE.stat().st_mtime:
        return out
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("the C load generator needs a C compiler (apt-get install gcc)")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}")
    done = subprocess.run(
        [compiler, "-O2", "-o", str(tmp), str(SOURCE)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"building {SOURCE.name} failed:\n{done.stderr}")
    tmp.replace(out)
    return out


def echo(
    port: int, path: str, clients: int, seconds: float, size: int = 32, procs: int = 1
) -> dict[str, Any]:
    """Run a closed-loop echo with ``clients`` connections split over ``procs`` processes.

    Returns messages, rate (messages per second of the loop), the generators'
    CPU seconds and CPU microseconds per message, and sampled latencies.
    """
    exe = str(binary())
    procs = max(1, min(procs, clients))
    shares = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    running = [
        subprocess.Popen(
            [exe, "echo", str(port), path, str(n), str(seconds), str(size)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in shares
    ]
    replies = []
    for proc in running:
        out, _ = proc.communicate(timeout=seconds + 120)
        reply = json.loads(out)
        if "error" in reply:
            raise RuntimeError(f"cload: {reply['error']}")
        replies.append(reply)
    messages = sum(r["messages"] for r in replies)
    cpu = sum(r["cpu"] for r in replies)
    return {
        "messages": messages,
        "rate": messages / seconds,
        "generator_cpu": cpu,
        "generator_cpu_us_per_message": cpu / max(1, messages) * 1e6,
        "latencies": sorted(x for r in replies for x in r["latencies"]),
    }


class CEchoServer:
    """``cload server``: a bare C echo server in its own process (the generator's ceiling)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [str(binary()), "server", "0"], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.port = int(json.loads(self.proc.stdout.readline())["port"])

    def cpu(self) -> float:
        """The server process's CPU seconds so far (user + system)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> CEchoServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
