"""The app ``bench_cluster`` serves with ``trio-durable serve --workers N``.

* ``/echo/N``: a WebSocket to echo object ``N`` (hibernatable; answers each
  message to its sender); ``/echo-where/N``: the pid of the process running it;
* ``/hit/NAME``: one storage write by counter ``NAME``, answered with its
  count and the pid of the process that runs it;
* ``/rpc/A/B/COUNT``: object ``A`` calls object ``B`` ``COUNT`` times and
  reports the calls per second and the latency percentiles it saw.
"""

from __future__ import annotations

import os
import time
from typing import Any

import attrs

import trio_durable as td


@attrs.define(eq=False)
class Echo(td.DurableObject):
    async def fetch(self, request: td.Request) -> td.Response:
        client, server = td.WebSocketPair()
        self.ctx.accept_websocket(server)
        return td.Response.websocket(client)

    async def websocket_message(self, ws: td.WebSocket, message: str | bytes) -> None:
        await ws.send(message)

    async def where(self) -> int:
        return os.getpid()


@attrs.define(eq=False)
class Counter(td.DurableObject):
    async def hit(self) -> dict[str, int]:
        count = int(await self.ctx.storage.get("count") or 0) + 1
        await self.ctx.storage.put("count", count)
        return {"count": count, "pid": os.getpid()}

    async def ping(self, n: int) -> int:
        return n + 1

    async def where(self) -> int:
        return os.getpid()

    async def call(self, other: str, count: int) -> dict[str, Any]:
        peer = self.ctx.namespace("counters").get_by_name(other)
        latencies = []
        started = time.perf_counter()
        for n in range(count):
            t0 = time.perf_counter()
            await peer.ping(n)
            latencies.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
        latencies.sort()
        return {
            "calls_per_second": count / elapsed,
            "p50_ms": latencies[len(latencies) // 2] * 1000,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
            "caller": os.getpid(),
            "callee": await peer.where(),
        }


async def worker(request: td.Request, runtime: td.Runtime) -> td.Response:
    parts = request.path.strip("/").split("/")
    if parts[0] == "echo":
        return await runtime.namespace("echoes").get_by_name(parts[1]).fetch(request)  # type: ignore[no-any-return]
    if parts[0] == "echo-where":
        return td.Response.json(await runtime.namespace("echoes").get_by_name(parts[1]).where())
    counters = runtime.namespace("counters")
    if parts[0] == "hit":
        return td.Response.json(await counters.get_by_name(parts[1]).hit())
    if parts[0] == "rpc":
        result = await counters.get_by_name(parts[1]).call(parts[2], int(parts[3]))
        return td.Response.json(result)
    if parts[0] == "where":
        return td.Response.json(await counters.get_by_name(parts[1]).where())
    return td.Response.text("not found", status=404)


app = td.App(worker=worker, objects={"echoes": Echo, "counters": Counter})
