"""At the file-descriptor cap the gateway answers 503, logs once, and recovers.

The server runs in a child process whose RLIMIT_NOFILE is lowered to 100
(this machine's hard cap cannot be raised, so the cap is reached from
below). Clients are blocking sockets in the test process, which has
descriptors to spare.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import trio_durable

LIMIT = 100
ROOT = Path(trio_durable.__file__).parent.parent
REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
#: Seconds a client waits for an answer; far above what a healthy answer takes.
PATIENCE = 10.0


class Child:
    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.gateway.fd_limited_server", str(LIMIT)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.strip().isdigit(), f"the server did not start: {line!r} {self.stop()!r}"
        self.port = int(line)

    def stop(self) -> str:
        """Stop the child; return its log."""
        _out, err = self.process.communicate(b"", timeout=30)
        return err.decode(errors="replace")


@pytest.fixture
def child() -> Iterator[Child]:
    server = Child()
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


def connect(port: int) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", port), timeout=PATIENCE)
    client.sendall(REQUEST)
    return client


def read_answer(client: socket.socket) -> bytes:
    """The first answer (head and a short body), or b"" if the server closed first."""
    data = b""
    try:
        while b"\r\n\r\n" not in data or not data.endswith((b"ok", b"\n")):
            chunk = client.recv(65536)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        raise AssertionError(f"the connection was reset after {data!r}") from None
    except TimeoutError:
        raise AssertionError(f"no answer within {PATIENCE} s (got {data!r})") from None
    return data


def test_clients_beyond_the_descriptor_cap_get_503_and_service_resumes(child: Child) -> None:
    held: list[socket.socket] = []
    refused = 0
    try:
        # Fill the server's descriptor table with keep-alive clients, then
        # keep knocking: every client gets 200 or, once the cap is reached,
        # 503 (the spare descriptor accepts it and answers), never silence
        # nor a close without an answer.
        for _ in range(LIMIT + 30):
            client = connect(child.port)
            answer = read_answer(client)
            if answer.startswith(b"HTTP/1.1 200 "):
                held.append(client)
                continue
            assert answer.startswith(b"HTTP/1.1 503 "), answer
            refused += 1
            client.close()
        assert held, "some clients were served before the cap"
        assert refused >= 20, f"only {refused} clients were refused; the cap was not reached"

        # Stay at the cap for a while: it must not fill the log.
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            client = connect(child.port)
            answer = read_answer(client)
            assert answer.startswith(b"HTTP/1.1 503 "), answer
            client.close()
            time.sleep(0.05)

        # Free descriptors: new clients are served again.
        for client in held[:20]:
            client.close()
        del held[:20]
        served = 0
        deadline = time.monotonic() + PATIENCE
        while served < 10:
            assert time.monotonic() < deadline, f"only {served} served after descriptors freed"
            client = connect(child.port)
            answer = read_answer(client)
            client.close()
            if answer.startswith(b"HTTP/1.1 200 "):
                served += 1
            else:
                assert answer.startswith(b"HTTP/1.1 503 "), answer
                time.sleep(0.05)
    finally:
        for client in held:
            client.close()
    log = child.stop()
    assert "Traceback" not in log, log
    limit_lines = [line for line in log.splitlines() if "descriptor" in line or "EMFILE" in line]
    assert 1 <= len(limit_lines) <= 4, f"{len(limit_lines)} log lines about the cap:\n{log}"
