"""``benchmarks/chaos.py`` in a short run: a kill -9 and a SIGSTOP under load, nothing lost."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster.workers import ROOT

pytestmark = pytest.mark.slow


def test_a_short_chaos_run_passes_with_both_kinds_of_fault(
    postgres_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "chaos.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/chaos.py", "--url", postgres_url,
         "--seconds", "32", "--interval", "14", "--lease-seconds", "2",
         "--http-clients", "4", "--ws-clients", "6", "--chains", "4",
         "--seed", "12", "--log-dir", str(tmp_path / "logs"), "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    report = f"{done.stdout}\n{done.stderr[-4000:]}"
    result = json.loads(out.read_text())
    assert result["faults"]["kill"] >= 1 and result["faults"]["stop"] >= 1, report
    assert len(result["failover_kill"]) >= 1 and len(result["failover_stop"]) >= 1, report
    assert result["acked_http_writes"] > 100 and result["acked_ws_messages"] > 50, report
    assert result["alarms_fired"] > 10, report
    assert done.returncode == 0, report
    assert result["passed"], report


def _log(*writes: tuple[str, int]) -> list[list[object]]:
    return [[seq, nonce, epoch] for seq, (nonce, epoch) in enumerate(writes, start=1)]


@pytest.mark.parametrize(
    ("writes", "expected"),
    [
        ([("a", 1), ("a", 1), ("b", 2), ("c", 5)], []),
        (
            [("a", 1), ("b", 2), ("a", 1)],
            ["activation a writes again after another", "epoch 1 after 2"],
        ),
        ([("a", 3), ("b", 2)], ["epoch 2 after 3"]),
        ([("a", 1), ("b", 1)], ["epoch 1 shared by a and b"]),
        ([("a", 1), ("a", 2)], ["activation a moved from epoch 1 to 2"]),
    ],
)
def test_the_chaos_checker_sees_two_live_activations(
    writes: list[tuple[str, int]], expected: list[str]
) -> None:
    from benchmarks.chaos import activation_violations

    found = activation_violations("x", _log(*writes))
    assert [f.split(": ", 1)[1] for f in found] == expected
