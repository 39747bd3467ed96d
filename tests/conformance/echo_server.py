"""An echo object behind td.serve, for the Autobahn conformance suite.

Run: ``python -m tests.conformance.echo_server [PORT]`` then
``../shared/tools/autobahn.sh ws://127.0.0.1:PORT``.
"""

from __future__ import annotations

import sys

import attrs
import trio

import trio_durable as td


@attrs.define(eq=False)
class Echo(td.DurableObject):
    async def fetch(self, request: td.Request) -> td.Response:
        client, server = td.WebSocketPair()
        self.ctx.accept_websocket(server)
        return td.Response.websocket(client)

    async def websocket_message(self, ws: td.WebSocket, message: str | bytes) -> None:
        await ws.send(message)


async def worker(request: td.Request, runtime: td.Runtime) -> td.Response:
    return await runtime.namespace("echo").get_by_name("echo").fetch(request)


async def main(port: int) -> None:
    async with td.open_runtime(objects={"echo": Echo}) as runtime:
        await td.serve(runtime, worker, host="127.0.0.1", port=port)


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 9001)
