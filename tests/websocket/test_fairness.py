"""Clients that flood a server with tiny messages do not starve everybody else.

No message rate limit is configured: fairness must hold by design. Eight
flooders, in a process of their own (``flooder.py``), send 16-byte messages
to one object as fast as TCP takes them; meanwhile an independent client
(the ``websockets`` library, in a thread) talks to another object, and new
clients connect to the flooded one. Real sockets, real clock.

When each ``recv`` of a flooder (about 3,000 messages) was parsed and
delivered in one go, the median round trip here was 0.3 to 1 s and the
median handshake about 1 s. With bounded reader turns both are a few
milliseconds; the bounds below (100 ms, 250 ms) leave room for a loaded
test machine and stay far below the old figures.
"""

from __future__ import annotations

import functools
import json
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import websockets.sync.client

import trio_durable as td

from .objects import Room

FLOODERS = 8
#: Each test measures for at least MIN_SECONDS (and enough samples), at most
#: MAX_SECONDS; the flood goes on meanwhile.
MIN_SECONDS = 1.0
MAX_SECONDS = 3.0
#: A flood that reached the server: far fewer echoes mean it was not flooded.
MIN_ECHOED = 5_000
ROOT = Path(__file__).resolve().parents[2]


async def worker(request: td.Request, runtime: td.Runtime) -> td.Response:
    return await runtime.namespace("rooms").get_by_name(request.path.strip("/")).fetch(request)


@pytest.fixture
async def port() -> AsyncIterator[int]:
    async with td.open_runtime(objects={"rooms": Room}) as runtime, trio.open_nursery() as inner:
        bound: int = await inner.start(
            functools.partial(td.serve, runtime, worker, host="127.0.0.1", port=0)
        )
        yield bound
        inner.cancel_scope.cancel()


class Flood:
    """The flooders' process: started by :meth:`start`, reporting with :meth:`report`."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.process: subprocess.Popen[str] | None = None

    async def start(self) -> None:
        """Start the flooders; return once the server is flooded (they go on until stopped)."""
        argv = [sys.executable, "-m", "tests.websocket.flooder", str(self.port), "/flood"]
        argv.append(str(FLOODERS))
        pipe = subprocess.PIPE
        popen = functools.partial(
            subprocess.Popen, argv, cwd=ROOT, stdin=pipe, stdout=pipe, text=True
        )
        self.process = await in_thread(popen)
        assert self.process.stdout is not None
        line = await in_thread(self.process.stdout.readline)
        assert line.strip() == "ready", f"the flooders did not start: {line!r}"

    async def check_flooded(self) -> None:
        """Stop the flooders; check that they flooded until then, every one connected."""
        assert self.process is not None and self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.close()
        result = json.loads(await in_thread(self.process.stdout.readline))
        assert result["closed_by_server"] == 0, f"the server dropped flooders: {result}"
        echoed = result["echoed"]
        assert echoed >= MIN_ECHOED, f"only {echoed:,} messages came back: no flood"

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            for pipe in (self.process.stdin, self.process.stdout):
                if pipe is not None:
                    pipe.close()


@pytest.fixture
async def flood(port: int) -> AsyncIterator[Flood]:
    flood = Flood(port)
    try:
        yield flood
    finally:
        flood.stop()


def connect(port: int, path: str) -> Any:
    return websockets.sync.client.connect(
        f"ws://127.0.0.1:{port}{path}", open_timeout=30, close_timeout=2, legacy=True
    )


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await trio.to_thread.run_sync(functools.partial(fn, *args))


def enough_time(began: float, samples: list[float], wanted: int) -> bool:
    """True while a measurement should go on."""
    elapsed = time.perf_counter() - began
    return elapsed < MAX_SECONDS and (elapsed < MIN_SECONDS or len(samples) < wanted)


async def test_a_bystanders_round_trips_stay_fast_while_others_flood(
    port: int, flood: Flood
) -> None:
    bystander = await in_thread(connect, port, "/calm")
    await flood.start()

    def round_trips() -> list[float]:
        times: list[float] = []
        began = time.perf_counter()
        while enough_time(began, times, 30):
            sent = time.perf_counter()
            bystander.send("still there?")
            assert bystander.recv(30) == "still there?"
            times.append(time.perf_counter() - sent)
        return times

    try:
        times = await in_thread(round_trips)
    finally:
        await in_thread(bystander.close_socket)
    await flood.check_flooded()
    median = statistics.median(times)
    assert median < 0.1, (
        f"the bystander's median round trip took {median * 1e3:.0f} ms "
        f"({len(times)} trips) while {FLOODERS} clients flooded"
    )


async def test_new_handshakes_complete_while_others_flood(port: int, flood: Flood) -> None:
    await flood.start()

    def handshakes() -> list[float]:
        times: list[float] = []
        began = time.perf_counter()
        while enough_time(began, times, 5):
            started = time.perf_counter()
            client = connect(port, "/flood")  # the flooded object itself
            times.append(time.perf_counter() - started)
            client.close_socket()
            time.sleep(0.02)
        return times

    times = await in_thread(handshakes)
    await flood.check_flooded()
    median = statistics.median(times)
    assert median < 0.25, (
        f"a new handshake took {median * 1e3:.0f} ms (median of {len(times)}) "
        f"while {FLOODERS} clients flooded the object"
    )
