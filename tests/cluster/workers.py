"""Running ``trio-durable serve --workers N`` in a subprocess for the cluster tests."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parents[2]
_URL = re.compile(r"serving \S+ on (http://\S+) with \d+ workers")
_READY = re.compile(r"worker (\d+) \(pid (\d+)\) serves")


class Cluster:
    """A running ``serve --workers N``: its process, its log, its workers."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: list[str] = []
        self.url = ""
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._lock:
                self.lines.append(line)

    @property
    def log(self) -> str:
        with self._lock:
            return "".join(self.lines)

    def worker_pids(self) -> dict[int, int]:
        """Slot → pid of the newest worker of each slot that said it serves."""
        found: dict[int, int] = {}
        for match in _READY.finditer(self.log):
            found[int(match[1])] = int(match[2])
        return found

    def wait_for(self, pattern: str, timeout: float = 30, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(re.findall(pattern, self.log)) >= count:
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not seen {count} time(s):\n{self.log}")

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


@contextmanager
def cluster(data_dir: Path, workers: int = 2, *extra: str) -> Iterator[Cluster]:
    """``python -m trio_durable serve tests.cluster.app:app --workers N`` on a free port."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trio_durable",
            "serve",
            "tests.cluster.app:app",
            "--workers",
            str(workers),
            "--port",
            "0",
            "--data-dir",
            str(data_dir),
            *extra,
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    running = Cluster(process)
    try:
        running.wait_for(_URL.pattern)
        match = _URL.search(running.log)
        assert match is not None
        running.url = match[1]
        running.wait_for(r"took \d+ shard", count=workers)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        running._reader.join(5)
        assert process.stderr is not None
        process.stderr.close()


async def get(port: int, path: str, within: float = 15) -> tuple[int, dict[str, str], Any]:
    """One HTTP/1.1 GET on a new connection: (status, headers, JSON body)."""
    with trio.fail_after(within):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(
                f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n".encode()
            )
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {
        name.lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines[1:])
    }
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = body.decode("utf-8", "replace")
    return status, headers, parsed
