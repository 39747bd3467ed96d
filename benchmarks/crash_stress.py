"""kill -9 stress: 20+ random kills of a writing runtime, each followed by a check.

Run: ``python benchmarks/crash_stress.py [--kills 20] [--seed 1]``. Each round
starts the writer of ``tests/storage/crash_child.py`` on one data dir, kills
it with SIGKILL at a random moment, restarts it, and checks that every
acknowledged write is there, no transaction is half applied and the alarm
pending at the kill fired. The data dir is kept across rounds, so later
rounds also recover from earlier kills.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.storage.crash import check, kill_during_writes, verify


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    acked_all: dict[str, set[int]] = {}
    failures = 0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        for round_ in range(1, args.kills + 1):
            acked, _ = kill_during_writes(data_dir, rng)
            for name, done in acked.items():
                acked_all.setdefault(name, set()).update(done)
            problems = check(acked_all, verify(data_dir))
            total = sum(len(done) for done in acked_all.values())
            status = "ok" if not problems else "; ".join(problems[:3])
            print(f"kill {round_:2}: {total:6,} acknowledged writes so far — {status}", flush=True)
            failures += bool(problems)
    elapsed = time.perf_counter() - started
    print(f"{args.kills} kills, {failures} with lost or half-applied writes ({elapsed:.0f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
