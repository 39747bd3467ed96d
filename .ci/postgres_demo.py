"""Serve the chat demo on a throwaway PostgreSQL and chat through it, as a deployment would.

CI starts a PostgreSQL server of Debian's ``postgresql`` package here
(``initdb`` and ``pg_ctl`` of its versioned bin directory, as the
``postgres`` user, on a free port, under a temporary directory: see
``tests/postgres/server.py``), serves ``examples.chat:app`` on it with
``python -m trio_durable serve --database URL``, and checks that it works
end to end: ``GET /`` answers 200, two members of one room hear each other
over WebSockets, and a member joining after a restart of the server gets
the room's history back from the database. Then SIGINT must stop the server
with status 0, and the database server is stopped and removed.

The test suite starts its own throwaway servers (its tests stop and restart
them); this check proves the demo on the database as a user runs it.

Usage: ``python .ci/postgres_demo.py`` from the repository's root.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from websockets.sync.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.postgres.server import running_server  # noqa: E402 (after the path is set)

#: Seconds for the server to answer; generous: a loaded machine is slow, not broken.
START_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def chat_server(database: str, workdir: Path) -> Iterator[str]:
    """``serve examples.chat:app --database URL`` until the block ends; its base URL."""
    port = free_port()
    command = [
        sys.executable, "-m", "trio_durable", "serve", "examples.chat:app",
        "--host", "127.0.0.1", "--port", str(port), "--database", database,
    ]  # fmt: skip
    log = (workdir / f"serve-{port}.log").open("w")
    process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise SystemExit(f"the server exited with {process.returncode}: {_tail(log)}")
            try:
                with urllib.request.urlopen(base + "/", timeout=5) as response:
                    if response.status != 200:
                        raise SystemExit(f"GET / answered {response.status}")
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"GET / got no answer in {START_TIMEOUT:g} s") from None
                time.sleep(0.2)
        yield base
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                status = process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                raise SystemExit(f"SIGINT did not stop the server in {STOP_TIMEOUT:g} s") from None
            if status != 0:
                raise SystemExit(f"the server exited with {status} on SIGINT: {_tail(log)}")
        log.close()


def _tail(log: object) -> str:
    path = Path(getattr(log, "name", ""))
    return path.read_text()[-2000:] if path.exists() else ""


def member(base: str, room: str, name: str) -> tuple[ClientConnection, list[object]]:
    """Join ``room`` as ``name``; the connection and what came before ``{"ready": true}``."""
    url = base.replace("http://", "ws://") + f"/api/room/{room}/websocket"
    ws = connect(url, open_timeout=30, close_timeout=5, proxy=None, legacy=True)
    ws.send(json.dumps({"name": name}))
    before: list[object] = []
    while (message := json.loads(ws.recv(timeout=30))) != {"ready": True}:
        before.append(message)
    return ws, before


def heard(ws: ClientConnection, text: str) -> bool:
    """Whether a chat message with ``text`` arrives (other messages are skipped)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        message = json.loads(ws.recv(timeout=30))
        if isinstance(message, dict) and message.get("message") == text:
            return True
    return False


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="td-ci-pg-") as tmp, running_server() as postgres:
        database = postgres.url()
        with chat_server(database, Path(tmp)) as base:
            ada, _ = member(base, "ci", "ada")
            bob, _ = member(base, "ci", "bob")
            ada.send(json.dumps({"message": "hello from ada"}))
            if not heard(bob, "hello from ada"):
                raise SystemExit("bob did not hear ada")
            ada.close()
            bob.close()
        # A new server process on the same database: the history is stored there.
        with chat_server(database, Path(tmp)) as base:
            cy, backlog = member(base, "ci", "cy")
            cy.close()
        said = [m.get("message") for m in backlog if isinstance(m, dict)]
        if "hello from ada" not in said:
            raise SystemExit(f"the history did not come back from the database: {backlog!r}")
    print("postgres demo: served on PostgreSQL, chatted, history kept across a restart: OK")


if __name__ == "__main__":
    main()
