"""Memory per idle (hibernated) WebSocket connection: trio_durable vs trio-websocket.

For each server, a fresh server process is started; it measures its own RSS,
starts a load generator in a separate process (raw blocking sockets, one
prepared handshake), waits until every connection is open and idle, and
measures again. The difference divided by the connection count is the cost
of one idle connection in the server process.

* ``trio_durable``: ``td.serve`` with objects that accept each socket as
  hibernatable and store a 100-byte attachment on it; connections are spread
  over ``connections / per_object`` objects. The measurement is taken once
  every object was evicted (hibernated) and every socket is parked.
* ``trio-websocket``: ``trio_websocket.serve_websocket`` with a handler that
  accepts and waits for a message (what an idle connection costs there),
  holding a 100-byte value per connection too.

10,000 connections need 10,000 fds in each process (the limit here is
20,000 per process). Run::

    python benchmarks/bench_idle.py                  # 10,000 connections
    python benchmarks/bench_idle.py --quick          # 2,000
    python benchmarks/bench_idle.py --connections 5000

Target: at most 2 KiB per hibernated connection, against
about 20 KiB for trio-websocket.
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import os
import resource
import socket
import subprocess
import sys
import time
from typing import Any

ATTACHMENT = "a" * 90  # serialized as a JSON object, about 100 bytes


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        raise SystemExit(f"need {needed:,} open files; the limit is {soft:,}")


# ----------------------------------------------------------- load generator


def run_client(port: int, connections: int, per_object: int) -> None:
    """Open the connections, print "ready", hold them until stdin closes."""
    raise_fd_limit(connections + 100)
    key = base64.b64encode(os.urandom(16)).decode()
    socks = []
    for i in range(connections):
        path = f"/idle/{i // per_object}"
        handshake = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(handshake)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                raise SystemExit(f"connection {i} closed during the handshake: {answer!r}")
            answer += chunk
        if not answer.startswith(b"HTTP/1.1 101"):
            raise SystemExit(f"connection {i} refused: {answer[:200]!r}")
        socks.append(sock)
    print("ready", flush=True)
    sys.stdin.read()
    for sock in socks:
        sock.close()


def start_client(port: int, connections: int, per_object: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--role=client",
            f"--port={port}",
            f"--connections={connections}",
            f"--per-object={per_object}",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


async def drive_client(port: int, connections: int, per_object: int) -> tuple[float, Any]:
    """Run the load generator; return (seconds to connect, its process)."""
    import trio

    start = time.perf_counter()
    proc = start_client(port, connections, per_object)
    assert proc.stdout is not None
    line = await trio.to_thread.run_sync(proc.stdout.readline)
    if line.strip() != "ready":
        raise SystemExit(f"the load generator failed: {line!r}")
    return time.perf_counter() - start, proc


def stop_client(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=60)


# ------------------------------------------------------------ the servers


def run_td_server(connections: int, per_object: int) -> dict[str, Any]:
    import attrs
    import trio

    import trio_durable as td
    from trio_durable._gateway._serve import serve

    @attrs.define
    class Attachment:
        data: str

    @attrs.define(eq=False)
    class Idle(td.DurableObject):
        async def fetch(self, request: td.Request) -> td.Response:
            client, server = td.WebSocketPair()
            self.ctx.accept_websocket(server)
            server.serialize_attachment(Attachment(ATTACHMENT))
            return td.Response.websocket(client)

    async def worker(request: td.Request, runtime: td.Runtime) -> td.Response:
        name = request.path.rsplit("/", 1)[-1]
        return await runtime.namespace("idle").get_by_name(name).fetch(request)

    result: dict[str, Any] = {}

    async def main() -> None:
        async with (
            td.open_runtime(objects={"idle": Idle}, hibernate_after=0.5) as runtime,
            trio.open_nursery() as nursery,
        ):
            port = await nursery.start(
                lambda task_status: serve(
                    runtime,
                    worker,
                    host="127.0.0.1",
                    port=0,
                    max_connections=connections + 100,
                    park_after=0.2,
                    task_status=task_status,
                )
            )
            # Warm up (imports, first activation, code paths), then measure.
            seconds, proc = await drive_client(port, 10, per_object)
            stop_client(proc)
            await trio.sleep(1.0)
            gc.collect()
            before = rss_bytes()
            seconds, proc = await drive_client(port, connections, per_object)
            # Wait for every object to hibernate and every socket to park.
            parking = runtime.sockets.parking
            for _ in range(300):
                if runtime.statistics().live_objects == 0 and len(parking) >= connections:
                    break
                await trio.sleep(0.1)
            gc.collect()
            await trio.sleep(0.5)
            after = rss_bytes()
            result.update(
                server="trio_durable",
                connect_seconds=round(seconds, 2),
                live_objects=runtime.statistics().live_objects,
                parked=len(parking),
                hibernatable=runtime.sockets.hibernatable_count(),
                rss_before=before,
                rss_after=after,
            )
            stop_client(proc)
            nursery.cancel_scope.cancel()

    trio.run(main)
    return result


def run_tw_server(connections: int, per_object: int) -> dict[str, Any]:
    import trio
    import trio_websocket

    held: dict[object, str] = {}

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        held[ws] = ATTACHMENT + str(len(held))
        try:
            await ws.get_message()
        except trio_websocket.ConnectionClosed:
            pass
        finally:
            held.pop(ws, None)

    result: dict[str, Any] = {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None
            )
            port = server.port
            seconds, proc = await drive_client(port, 10, per_object)
            stop_client(proc)
            await trio.sleep(1.0)
            gc.collect()
            before = rss_bytes()
            seconds, proc = await drive_client(port, connections, per_object)
            for _ in range(300):
                if len(held) >= connections:
                    break
                await trio.sleep(0.1)
            gc.collect()
            await trio.sleep(0.5)
            after = rss_bytes()
            result.update(
                server="trio-websocket",
                connect_seconds=round(seconds, 2),
                held=len(held),
                rss_before=before,
                rss_after=after,
            )
            stop_client(proc)
            nursery.cancel_scope.cancel()

    trio.run(main)
    return result


def run_server_process(kind: str, connections: int, per_object: int) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            f"--role={kind}",
            f"--connections={connections}",
            f"--per-object={per_object}",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="2,000 connections")
    parser.add_argument("--per-object", type=int, default=100, help="connections per object")
    parser.add_argument("--role", default="main", choices=["main", "client", "td", "tw"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--only", choices=["td", "tw"], help="measure one server only")
    args = parser.parse_args()
    connections = 2_000 if args.quick else args.connections

    if args.role == "client":
        run_client(args.port, connections, args.per_object)
        return
    if args.role in ("td", "tw"):
        raise_fd_limit(connections + 200)
        run = run_td_server if args.role == "td" else run_tw_server
        print(json.dumps(run(connections, args.per_object)))
        return

    print(f"{connections:,} idle connections, {args.per_object} per object, each process alone")
    kinds = [args.only] if args.only else ["td", "tw"]
    for kind in kinds:
        result = run_server_process(kind, connections, args.per_object)
        per_connection = (result["rss_after"] - result["rss_before"]) / connections
        extra = {k: v for k, v in result.items() if k not in ("server", "rss_before", "rss_after")}
        print(
            f"{result['server']:>15}: {per_connection / 1024:6.2f} KiB per connection "
            f"(RSS {result['rss_before'] / 2**20:.1f} -> {result['rss_after'] / 2**20:.1f} MiB) "
            f"{extra}"
        )


if __name__ == "__main__":
    main()
