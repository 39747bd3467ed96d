"""Helpers for tests of the command line: real processes, their logs read line by line."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Long enough that a loaded 2-core machine never fails a test by being slow.
WAIT = 60.0


def environment() -> dict[str, str]:
    """The environment of a child: this checkout's trio_durable first on the path."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}


class Command:
    """``python -m trio_durable ARGS`` running in ``cwd``; its stderr is read as it comes."""

    def __init__(self, *args: str, cwd: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "trio_durable", *args],
            cwd=cwd,
            env=environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            # Its own process group, so that a failed test can end its children too.
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._unread: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._unread.put(line.rstrip("\n"))
        self._unread.put(None)

    def wait_for(self, pattern: str, timeout: float = WAIT) -> re.Match[str]:
        """The first unread log line matching ``pattern`` (skipping the lines before it)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._unread.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"no line matching {pattern!r} within {timeout} s; log so far:\n"
                    + "\n".join(self.lines)
                ) from None
            if line is None:
                self._unread.put(None)
                raise AssertionError(
                    f"the command exited before a line matching {pattern!r}; log:\n"
                    + "\n".join(self.lines)
                )
            self.lines.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Send ``signum`` and wait for the exit; returns the exit status."""
        self.process.send_signal(signum)
        return self.wait()

    def wait(self) -> int:
        """Wait for the exit; returns the exit status, with every log line in ``lines``."""
        code = self.process.wait(WAIT)
        self._reader.join(WAIT)
        while (line := self._unread.get()) is not None:
            self.lines.append(line)
        self._close()
        return code

    def _close(self) -> None:
        assert self.process.stderr is not None
        self._reader.join(WAIT)
        self.process.stderr.close()

    def kill(self) -> None:
        """Last resort for a test that failed half way: no process outlives its test."""
        if self.process.poll() is None:
            # The group is this command's own (start_new_session): its children go too.
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._close()


def run(*args: str, cwd: Path = ROOT, timeout: float = WAIT) -> subprocess.CompletedProcess[str]:
    """``python -m trio_durable ARGS`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "trio_durable", *args],
        cwd=cwd,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a command that refused its arguments (exit status 2)."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("trio-durable: error: "), lines[0]
    return lines[0]
