"""Drive ``crash_child.py``: write, kill -9 at a random moment, restart, check."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

CHILD = Path(__file__).with_name("crash_child.py")


def _spawn(data_dir: Path | str, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), str(data_dir), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill_during_writes(
    data_dir: Path | str, rng: random.Random
) -> tuple[dict[str, set[int]], float]:
    """Run the writer, SIGKILL it at a random moment; return what was acknowledged."""
    proc = _spawn(data_dir, "write")
    acked: dict[str, set[int]] = defaultdict(set)
    alarm: list[float] = []
    first_ack = threading.Event()
    assert proc.stdout is not None

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            kind, *rest = line.split()
            if kind == "ack":
                acked[rest[0]].add(int(rest[1]))
                first_ack.set()
            elif kind == "alarm":
                alarm.append(float(rest[0]))

    reader = threading.Thread(target=read)
    reader.start()
    if not first_ack.wait(20):
        proc.kill()
        raise AssertionError("the writer never acknowledged a write")
    time.sleep(rng.uniform(0.0, 0.6))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    reader.join()
    proc.stdout.close()
    if proc.stderr is not None:
        proc.stderr.close()
    return dict(acked), alarm[0]


def verify(data_dir: Path | str) -> dict[str, dict[str, object]]:
    """Restart on the same data dir and return every object's stored keys."""
    proc = _spawn(data_dir, "verify")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, f"the verifier failed: {err}"
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def check(
    acked: dict[str, set[int]], state: dict[str, dict[str, object]], *, sql_atomic: bool = False
) -> list[str]:
    """Every acknowledged write is stored (key-value and SQL); no transaction is half applied.

    ``sql_atomic``: the backend commits the SQL part with the key-value part
    (PostgreSQL), so no SQL row may be stored without its keys either.
    """
    problems = []
    for name, done in acked.items():
        keys = state.get(name, {})
        logged = set(keys.get("sql_log", ()))  # type: ignore[call-overload]
        for i in done:
            if any(f"t{i:06}-{j}" not in keys for j in range(4)):
                problems.append(f"{name}: acknowledged write {i} is missing")
            if i not in logged:
                problems.append(f"{name}: the SQL row of acknowledged write {i} is missing")
        if sql_atomic:
            for i in logged:
                if any(f"t{i:06}-{j}" not in keys for j in range(4)):
                    problems.append(f"{name}: write {i}'s SQL row is stored without its keys")
        groups: dict[str, int] = defaultdict(int)
        for key in keys:
            if key.startswith("t"):
                groups[key.split("-")[0]] += 1
        for group, count in groups.items():
            if count != 4:
                problems.append(f"{name}: transaction {group} is half applied ({count}/4 keys)")
    if "alarm_fired" not in state.get("alarm", {}):
        problems.append("the alarm pending at the kill did not fire after the restart")
    return problems
