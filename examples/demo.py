"""The core demo: a counter over RPC, and a WebSocket echo over the network.

Run it with ``python examples/demo.py``. It shows, in about two seconds:

1. a ``Counter`` object called over RPC, hibernating, and coming back with
   its in-memory state reset;
2. an ``Echo`` object served by ``td.serve`` on a real TCP port, reached by a
   WebSocket client, hibernating *while the client stays connected*, and
   woken by the next message.
"""

from __future__ import annotations

import functools
import tempfile

import attrs
import trio

import trio_durable as td


@attrs.define(eq=False)
class Counter(td.DurableObject):
    """Counts calls in memory; the count resets when the object hibernates."""

    calls: int = 0

    async def increment(self) -> int:
        self.calls += 1
        return self.calls


@attrs.define(eq=False)
class Echo(td.DurableObject):
    """Echoes WebSocket messages, numbering them per instance."""

    echoed: int = 0

    async def fetch(self, request: td.Request) -> td.Response:
        client, server = td.WebSocketPair()
        self.ctx.accept_websocket(server)
        return td.Response.websocket(client)

    async def websocket_message(self, ws: td.WebSocket, message: str | bytes) -> None:
        self.echoed += 1
        await ws.send(f"echo #{self.echoed} from this instance: {message!r}")


async def worker(request: td.Request, runtime: td.Runtime) -> td.Response:
    """The entry point of the gateway: every request goes to the one Echo object."""
    return await runtime.namespace("echo").get_by_name("demo").fetch(request)


async def main() -> None:
    data_dir = tempfile.mkdtemp(prefix="trio-durable-demo-")
    async with td.open_runtime(
        objects={"counters": Counter, "echo": Echo}, data_dir=data_dir, hibernate_after=0.5
    ) as runtime:
        print("== RPC ==")
        home = runtime.namespace("counters").get_by_name("home")
        print("id of 'home':", home.id)
        for _ in range(3):
            print("home.increment() ->", await home.increment())
        print("waiting 1 s so 'home' hibernates (hibernate_after=0.5 for the demo)...")
        await trio.sleep(1)
        print("after hibernation, home.increment() ->", await home.increment())

        print("\n== WebSocket over the network ==")
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                functools.partial(td.serve, runtime, worker, host="127.0.0.1", port=0)
            )
            url = f"ws://127.0.0.1:{port}/"
            print("serving on", url)
            ws = await td.connect_websocket(url)
            await ws.send("hello")
            print("client got:", await ws.receive())
            await ws.send("again")
            print("client got:", await ws.receive())
            print("waiting 1 s: the Echo object hibernates, the socket stays open...")
            await trio.sleep(1)
            live = runtime.statistics().live_objects
            print(f"live objects now: {live} (the counter and the echo both hibernated)")
            await ws.send("wake up")
            print("client got:", await ws.receive())
            await ws.close()
            nursery.cancel_scope.cancel()

        print("\nstatistics:", runtime.statistics())
        ids = await runtime.list_object_ids("counters")
        print("counters ever activated:", [i.name for i in ids])


if __name__ == "__main__":
    trio.run(main)
