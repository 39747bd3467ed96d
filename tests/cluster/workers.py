"""Running ``trio-durable serve --workers N`` in a subprocess for the cluster tests."""

from __future__ import annotations

import contextlib
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
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

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

    def ready(self, workers: int, timeout: float = 60) -> None:
        """Wait until it serves and each worker took its first shards."""
        self.wait_for(_URL.pattern, timeout)
        match = _URL.search(self.log)
        assert match is not None
        self.url = match[1]
        self.wait_for(r"took \d+ shard", timeout, count=workers)

    def kill_node(self) -> None:
        """``kill -9`` the supervisor and every worker at once (a node in its own session)."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def signal_node(self, signum: int) -> None:
        """Send ``signum`` to the supervisor and every worker (a node in its own session)."""
        os.killpg(self.process.pid, signum)

    def kill_strays(self) -> None:
        """Kill workers left behind (their supervisor was killed with -9)."""
        for pid in self.worker_pids().values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@contextmanager
def cluster(data_dir: Path, workers: int = 2, *extra: str) -> Iterator[Cluster]:
    """``python -m trio_durable serve tests.cluster.app:app --workers N`` on a free port."""
    with serving(["--data-dir", str(data_dir), *extra], workers) as running:
        yield running


@contextmanager
def node(
    database: str,
    name: str,
    workers: int = 1,
    *extra: str,
    app: str = "tests.cluster.app:app",
    wait: bool = True,
) -> Iterator[Cluster]:
    """One node of a deployment on ``database``: ``serve --database URL --node NAME``.

    It runs in a session of its own, so :meth:`Cluster.kill_node` can
    ``kill -9`` the supervisor and its workers at once, as a machine dies.
    """
    with serving(
        ["--database", database, "--node", name, *extra],
        workers,
        app=app,
        new_session=True,
        wait=wait,
    ) as running:
        yield running


@contextmanager
def serving(
    args: list[str],
    workers: int,
    *,
    app: str = "tests.cluster.app:app",
    new_session: bool = False,
    wait: bool = True,
) -> Iterator[Cluster]:
    """``python -m trio_durable serve APP --workers N --port 0 ARGS...``, stopped at the end."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trio_durable",
            "serve",
            app,
            "--workers",
            str(workers),
            "--port",
            "0",
            *args,
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=new_session,
    )
    running = Cluster(process)
    try:
        if wait:
            running.ready(workers)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        running.kill_strays()
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


class Chatter(threading.Thread):
    """One client: sends numbered messages (some quickly, some rarely) and checks each echo."""

    def __init__(self, url: str, who: str, pause: float) -> None:
        super().__init__(daemon=True)
        self.who = who
        self.pause = pause
        self.ws: ClientConnection = connect(url, legacy=True)  # closed by the test
        self.sent = 0
        self.echoes: list[str] = []
        self.owners: set[str] = set()
        self.problem: str | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.sent += 1
                self.ws.send(str(self.sent))
                reply = self.ws.recv(timeout=20)
                assert isinstance(reply, str)
                who, tag, owner, number = reply.split(":")
                if (who, tag, number) != (self.who, self.who, str(self.sent)):
                    self.problem = f"sent {self.sent}, got {reply!r}"
                    return
                self.owners.add(owner)
                self.echoes.append(number)
                time.sleep(self.pause)
        except (ConnectionClosed, TimeoutError, OSError) as exc:
            self.problem = f"after {self.sent} sent: {exc!r}"
        except Exception as exc:  # a reply of the wrong shape
            self.problem = f"after {self.sent} sent: {exc!r}"
