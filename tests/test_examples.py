"""The core demo (RPC and a network echo, examples/demo.py) keeps working."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_runs_rpc_and_network_echo_with_hibernation() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "after hibernation, home.increment() -> 1" in out, out
    assert "client got: echo #2 from this instance: 'again'" in out, out
    assert "live objects now: 0" in out, "the echo object hibernated with the socket open"
    assert "client got: echo #1 from this instance: 'wake up'" in out, (
        "a new instance answered on the same connection"
    )
