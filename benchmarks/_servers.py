"""The servers the network benchmarks measure, each run in a process of its own.

``python -m benchmarks._servers --kind KIND [options]`` prints
``{"port": N}`` once it listens, then answers JSON-line commands on stdin:
``stats`` (RSS, process CPU time, open fds, and for trio_durable the object
and parking counters; ``"gc": true`` collects garbage first) and ``quit``.

Every kind serves the same tiny protocol on any path:

* a text or binary message is echoed back;
* the text message ``broadcast`` sends a 64-byte text message ``b...b`` to
  every connection of the server (for trio_durable: every socket of the
  object), then ``done <seconds>`` to the sender, the seconds being the
  server's own send loop.

Kinds:

``td``   ``td.serve`` with hibernatable objects: ``/o/<name>`` is object
         ``<name>`` of the ``echo`` namespace (the protocol above);
         ``/room/<name>`` is a chat room for the soak test (relays every
         message to every socket of the room, writes storage, sets alarms;
         with ``--store-messages`` it also stores every message).
``tw``   ``trio_websocket.serve_websocket``, one handler task per connection;
         the broadcast loops ``await conn.send_message`` over the connections.
``ws``   ``websockets`` asyncio server (``websockets.asyncio.server.serve``,
         no compression, no keepalive pings); the broadcast uses its
         ``broadcast()`` helper, the library's fastest path.
``raw``  plain Trio TCP (``trio.serve_tcp``): answers the handshake with a
         fixed 101 and echoes bytes back unparsed: the ceiling for a Trio
         server. The broadcast writes a prepared frame with ``send_all``.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import random
import sys
import time
from typing import Any

from benchmarks._common import open_fds, raise_fd_limit, rss_bytes

PAYLOAD = "b" * 64


def base_stats(collect: bool = False) -> dict[str, Any]:
    if collect:
        gc.collect()
    return {
        "rss": rss_bytes(),
        "cpu": time.process_time(),
        "fds": open_fds(),
        "t": time.monotonic(),
    }


def say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# ------------------------------------------------------------------ trio_durable


def run_td(args: argparse.Namespace) -> None:
    import attrs
    import trio

    import trio_durable as td
    from trio_durable.testing import evict

    @attrs.define(eq=False)
    class Echo(td.DurableObject):
        async def fetch(self, request: td.Request) -> td.Response:
            client, server = td.WebSocketPair()
            self.ctx.accept_websocket(server)
            return td.Response.websocket(client)

        async def websocket_message(self, ws: td.WebSocket, message: str | bytes) -> None:
            if message == "broadcast":
                start = time.perf_counter()
                for peer in self.ctx.get_websockets():
                    try:  # noqa: SIM105 - hot loop, keep it cheap
                        await peer.send(PAYLOAD)
                    except trio.ClosedResourceError:
                        pass
                await ws.send(f"done {time.perf_counter() - start:.6f}")
            else:
                await ws.send(message)

    @attrs.define(eq=False)
    class Room(td.DurableObject):
        count: int = 0
        alarm_set: bool = False

        async def fetch(self, request: td.Request) -> td.Response:
            client, server = td.WebSocketPair()
            self.ctx.accept_websocket(server, tags=["room"])
            return td.Response.websocket(client)

        async def websocket_message(self, ws: td.WebSocket, message: str | bytes) -> None:
            self.count += 1
            if args.store_messages:
                # Every message kept under a new key, as the chat example keeps
                # its history: the object's key-value cache grows with them.
                await self.ctx.storage.put(f"msg:{time.time_ns():020d}", message)
            if self.count % 10 == 0:
                # A write: the relayed messages below wait for its commit.
                await self.ctx.storage.put("count", self.count)
            for peer in self.ctx.get_websockets("room"):
                try:  # noqa: SIM105 - hot loop, keep it cheap
                    await peer.send(message)
                except trio.ClosedResourceError:
                    pass
            if not self.alarm_set:
                self.alarm_set = True
                if await self.ctx.storage.get_alarm() is None:
                    await self.ctx.storage.set_alarm(time.time() + args.alarm_every)

        async def alarm(self, info: td.AlarmInfo) -> None:
            fired = (await self.ctx.storage.get("alarms")) or 0
            await self.ctx.storage.put("alarms", fired + 1)
            for peer in self.ctx.get_websockets("room"):
                try:  # noqa: SIM105 - hot loop, keep it cheap
                    await peer.send(f"alarm {fired}")
                except trio.ClosedResourceError:
                    pass

    async def worker(request: td.Request, runtime: td.Runtime) -> td.Response:
        _, kind, name = request.path.split("/", 2)
        namespace = "rooms" if kind == "room" else "echo"
        return await runtime.namespace(namespace).get_by_name(name).fetch(request)

    async def evictor(runtime: td.Runtime) -> None:
        rng = random.Random(2)
        rooms = runtime.namespace("rooms")
        while True:
            await trio.sleep(args.evict_every)
            for _ in range(max(1, args.rooms // 10)):
                await evict(rooms.get_by_name(str(rng.randrange(args.rooms))))
            evictions[0] += max(1, args.rooms // 10)

    evictions = [0]

    async def control(runtime: td.Runtime, cancel: trio.CancelScope) -> None:
        while True:
            line = await trio.to_thread.run_sync(sys.stdin.readline)
            if not line:
                break
            command = json.loads(line)
            if command["cmd"] == "quit":
                break
            stats = base_stats(command.get("gc", False))
            rs = runtime.statistics()
            stats.update(
                live_objects=rs.live_objects,
                activations=rs.activations,
                evictions=rs.evictions,
                forced_evictions=evictions[0],
                resets=rs.resets,
                events=rs.events_dispatched,
                parked=len(runtime.sockets.parking),
                hibernatable=runtime.sockets.hibernatable_count(),
                # Absent before the cache budget was reported (these
                # benchmarks also run against older releases).
                storage_cache_bytes=getattr(rs, "storage_cache_bytes", None),
                storage_cache_budget_bytes=getattr(rs, "storage_cache_budget_bytes", None),
                storage_cache_evictions=getattr(rs, "storage_cache_evictions", None),
            )
            say(stats)
        cancel.cancel()

    runtime_options: dict[str, Any] = {}
    if args.storage_cache_bytes:
        runtime_options["storage_cache_bytes"] = args.storage_cache_bytes

    async def main() -> None:
        async with (
            td.open_runtime(
                objects={"echo": Echo, "rooms": Room},
                data_dir=args.data_dir,
                hibernate_after=args.hibernate_after,
                max_websockets_per_object=max(32_768, args.max_connections),
                **runtime_options,
            ) as runtime,
            trio.open_nursery() as nursery,
        ):
            port = await nursery.start(
                lambda task_status: td.serve(
                    runtime,
                    worker,
                    host="127.0.0.1",
                    port=0,
                    max_connections=args.max_connections,
                    park_after=args.park_after,
                    task_status=task_status,
                )
            )
            if args.evict_every > 0:
                nursery.start_soon(evictor, runtime)
            say({"port": port})
            await control(runtime, nursery.cancel_scope)

    trio.run(main)


# ------------------------------------------------------------------ trio-websocket


def run_tw(args: argparse.Namespace) -> None:
    import trio
    import trio_websocket

    conns: dict[trio_websocket.WebSocketConnection, None] = {}

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        conns[ws] = None
        try:
            while True:
                message = await ws.get_message()
                if message == "broadcast":
                    start = time.perf_counter()
                    for conn in list(conns):
                        try:  # noqa: SIM105 - hot loop, keep it cheap
                            await conn.send_message(PAYLOAD)
                        except trio_websocket.ConnectionClosed:
                            pass
                    await ws.send_message(f"done {time.perf_counter() - start:.6f}")
                else:
                    await ws.send_message(message)
        except trio_websocket.ConnectionClosed:
            pass
        finally:
            conns.pop(ws, None)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None
            )
            say({"port": server.port})
            while True:
                line = await trio.to_thread.run_sync(sys.stdin.readline)
                if not line or json.loads(line)["cmd"] == "quit":
                    break
                say({**base_stats(json.loads(line).get("gc", False)), "connections": len(conns)})
            nursery.cancel_scope.cancel()

    trio.run(main)


# ------------------------------------------------------------------ websockets (asyncio)


def run_ws(args: argparse.Namespace) -> None:
    import asyncio

    from websockets.asyncio.server import ServerConnection, broadcast, serve
    from websockets.exceptions import ConnectionClosed

    conns: dict[ServerConnection, None] = {}

    async def handler(ws: ServerConnection) -> None:
        conns[ws] = None
        try:
            async for message in ws:
                if message == "broadcast":
                    start = time.perf_counter()
                    broadcast(list(conns), PAYLOAD)
                    await ws.send(f"done {time.perf_counter() - start:.6f}")
                else:
                    await ws.send(message)
        except ConnectionClosed:
            pass
        finally:
            conns.pop(ws, None)

    async def main() -> None:
        async with serve(
            handler,
            "127.0.0.1",
            0,
            compression=None,
            ping_interval=None,
            max_queue=1,
        ) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            say({"port": port})
            while True:
                line = await asyncio.to_thread(sys.stdin.readline)
                if not line or json.loads(line)["cmd"] == "quit":
                    break
                say({**base_stats(json.loads(line).get("gc", False)), "connections": len(conns)})

    asyncio.run(main())


# ------------------------------------------------------------------ raw Trio TCP


def run_raw(args: argparse.Namespace) -> None:
    import trio

    response = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: x\r\n\r\n"
    )
    frame64 = bytes((0x81, len(PAYLOAD))) + PAYLOAD.encode()
    streams: dict[trio.SocketStream, None] = {}

    async def handle(stream: trio.SocketStream) -> None:
        try:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    return
                head += chunk
            await stream.send_all(response)
            streams[stream] = None
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    return
                if b"broadcast" in data:
                    start = time.perf_counter()
                    for peer in list(streams):
                        try:  # noqa: SIM105 - hot loop, keep it cheap
                            await peer.send_all(frame64)
                        except (trio.BrokenResourceError, trio.ClosedResourceError):
                            pass
                    done = f"done {time.perf_counter() - start:.6f}".encode()
                    await stream.send_all(bytes((0x81, len(done))) + done)
                else:
                    await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            streams.pop(stream, None)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1")
            )
            say({"port": listeners[0].socket.getsockname()[1]})
            while True:
                line = await trio.to_thread.run_sync(sys.stdin.readline)
                if not line or json.loads(line)["cmd"] == "quit":
                    break
                say({**base_stats(json.loads(line).get("gc", False)), "connections": len(streams)})
            nursery.cancel_scope.cancel()

    trio.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=["td", "tw", "ws", "raw"], required=True)
    parser.add_argument("--hibernate-after", type=float, default=10.0)
    parser.add_argument("--park-after", type=float, default=1.0)
    parser.add_argument("--max-connections", type=int, default=25_000)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--rooms", type=int, default=50)
    parser.add_argument("--evict-every", type=float, default=0.0)
    parser.add_argument("--alarm-every", type=float, default=1.0)
    parser.add_argument("--store-messages", type=int, default=0, help="1: rooms store every message")
    parser.add_argument("--storage-cache-bytes", type=int, default=0, help="0: the default")
    args = parser.parse_args()
    raise_fd_limit(1 << 20)
    run = {"td": run_td, "tw": run_tw, "ws": run_ws, "raw": run_raw}[args.kind]
    profile = os.environ.get("BENCH_PROFILE")
    if profile:  # BENCH_PROFILE=out.prof: cProfile the whole server run
        import cProfile

        cProfile.runctx(
            "run(args)",
            globals(),
            {"run": run, "args": args},
            f"{profile}.{args.kind}.{os.getpid()}",
        )
    else:
        run(args)


if __name__ == "__main__":
    main()
