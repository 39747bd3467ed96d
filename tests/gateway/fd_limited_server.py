"""A gateway in a process with few file descriptors (run by test_descriptor_limit.py).

``python -m tests.gateway.fd_limited_server LIMIT`` lowers RLIMIT_NOFILE to
LIMIT, serves ``GET /`` → 200 "ok" on 127.0.0.1 (port 0), prints the port,
logs to stderr, and exits when stdin closes.
"""

from __future__ import annotations

import functools
import logging
import resource
import sys

import attrs
import trio

import trio_durable as td


@attrs.define(eq=False)
class Nothing(td.DurableObject):
    """A runtime needs one object class; this server never reaches it."""


async def worker(request: td.Request, runtime: td.Runtime) -> td.Response:
    return td.Response.text("ok")


async def main() -> None:
    async with (
        td.open_runtime(objects={"nothing": Nothing}) as runtime,
        trio.open_nursery() as nursery,
    ):
        port = await nursery.start(
            functools.partial(
                td.serve, runtime, worker, host="127.0.0.1", port=0, handshake_timeout=60.0
            )
        )
        print(port, flush=True)
        # Reading stdin in a thread costs no descriptor.
        await trio.to_thread.run_sync(sys.stdin.read)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    limit = int(sys.argv[1])
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    trio.run(main)
