"""Helpers shared by the chat tests: a `websockets` client and the CLI server process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio
from websockets.sync.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parents[2]
URL_LINE = re.compile(r"serving \S+ on (http://\S+)")


async def in_thread(fn: Callable[..., Any], *args: Any, limit: float = 5) -> Any:
    with trio.fail_after(limit):
        return await trio.to_thread.run_sync(fn, *args)


class ChatClient:
    """A chat member speaking JSON through the ``websockets`` library's sync client."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection

    @classmethod
    async def connect(cls, port: int, room: str = "lobby") -> ChatClient:
        url = f"ws://127.0.0.1:{port}/api/room/{room}/websocket"
        options = {"ping_interval": None, "close_timeout": 1, "proxy": None, "legacy": True}
        return cls(await in_thread(lambda: connect(url, **options)))

    async def send(self, value: Any) -> None:
        await in_thread(self.connection.send, json.dumps(value))

    async def receive(self, wait: float = 3) -> Any:
        return json.loads(await in_thread(self.connection.recv, wait, limit=wait + 1))

    async def receive_until_ready(self) -> list[Any]:
        """Everything the server sends after the name, up to and without ``{"ready": true}``."""
        seen: list[Any] = []
        while (message := await self.receive()) != {"ready": True}:
            seen.append(message)
        return seen

    async def join(self, name: str) -> list[Any]:
        await self.send({"name": name})
        return await self.receive_until_ready()

    async def say(self, text: str) -> None:
        await self.send({"message": text})

    async def close(self, code: int = 1000) -> None:
        await in_thread(self.connection.close, code)

    async def drop(self) -> None:
        """Drop the TCP connection without a Close frame."""
        await in_thread(self.connection.close_socket)


@contextmanager
def cli_server(
    data_dir: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``trio-durable serve examples.chat:app`` on a free port: (process, base URL)."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trio_durable",
            "serve",
            "examples.chat:app",
            "--port",
            "0",
            "--data-dir",
            str(data_dir),
            *args,
        ],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = wait_for_url(process)
        yield process, url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        assert process.stderr is not None
        process.stderr.close()


def wait_for_url(process: subprocess.Popen[str], timeout: float = 15) -> str:
    """Read the server's log until its start line; return the URL in it."""
    assert process.stderr is not None
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            raise AssertionError(f"the server exited early: {''.join(lines)}")
        lines.append(line)
        match = URL_LINE.search(line)
        if match:
            return match.group(1)
    raise AssertionError(f"no start line in time: {''.join(lines)}")


def stop(process: subprocess.Popen[str], signum: int = signal.SIGTERM) -> tuple[int, str]:
    """Send ``signum``, wait for the exit; return (exit code, the rest of stderr)."""
    process.send_signal(signum)
    assert process.stderr is not None
    rest = process.stderr.read()
    return process.wait(10), rest
