"""``trio-durable worker``: one worker process of a cluster (started by its supervisor).

Not for people: ``trio-durable serve --workers N`` starts these. A worker
inherits the listening socket, the data directory's lock and a control
channel from its supervisor (as descriptors), opens a runtime that joins
the cluster, serves the app on the shared socket, and says it is ready.
It stops on SIGTERM or SIGINT, or when its supervisor goes away (the
control channel ends); told to *drain*, it hands its shards and sockets
over to its successor and exits.
"""

from __future__ import annotations

import argparse
import functools
import logging
import signal
import socket

import trio

from .._app import App
from .._cluster._control import ControlChannel
from .._cluster._member import ClusterSpec
from .._gateway._serve import serve
from .._runtime import open_runtime
from .._storage._sqlite import SqliteBackend
from ._common import LOG_LEVELS, Commands, load_app

__all__ = ["add_parser", "run", "run_worker"]

logger = logging.getLogger("trio_durable.cli")


def add_parser(commands: Commands) -> None:
    """Add the (hidden) ``worker`` command."""
    parser = commands.add_parser("worker", help=argparse.SUPPRESS)
    parser.add_argument("app", metavar="MODULE:ATTRIBUTE")
    parser.add_argument("--slot", type=int, required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--listen-fd", type=int, required=True)
    parser.add_argument("--lock-fd", type=int, required=True)
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--lease-seconds", type=float, default=4.0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run one worker until it is told to stop; returns the exit status."""
    app = load_app(args.app)
    spec = ClusterSpec(slot=args.slot, run_dir=args.run_dir, lease_seconds=args.lease_seconds)
    trio.run(
        functools.partial(
            run_worker,
            app,
            spec,
            data_dir=args.data_dir,
            listen_fd=args.listen_fd,
            lock_fd=args.lock_fd,
            control_fd=args.control_fd,
            host=args.host,
        )
    )
    return 0


async def run_worker(
    app: App,
    spec: ClusterSpec,
    *,
    data_dir: str,
    listen_fd: int,
    lock_fd: int,
    control_fd: int,
    host: str,
) -> None:
    """Serve ``app`` as one worker of a cluster until told to stop."""
    listener = socket.socket(fileno=listen_fd)
    control = ControlChannel(trio.socket.from_stdlib_socket(socket.socket(fileno=control_fd)))
    backend = SqliteBackend(data_dir, lock_fd=lock_fd)
    port = listener.getsockname()[1]
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with (
            open_runtime(
                app.objects, backend=backend, env=app.env, tune_gc=True, cluster=spec
            ) as runtime,
            trio.open_nursery() as nursery,
        ):
            member = runtime.cluster
            assert member is not None
            serving = trio.CancelScope()

            async def serve_until_drained(*, task_status: trio.TaskStatus[int]) -> None:
                with serving:
                    await serve(
                        runtime,
                        app.worker,
                        host=host,
                        port=port,
                        sock=listener,
                        task_status=task_status,
                    )

            await nursery.start(serve_until_drained)
            await control.send({"ready": member.member.member_id})
            stop = trio.Event()

            async def on_signal() -> None:
                async for signum in signals:
                    logger.debug("worker %d got %s", spec.slot, signal.Signals(signum).name)
                    stop.set()
                    return

            async def on_control() -> None:
                while True:
                    message = await control.receive()
                    if message is None:  # the supervisor is gone: no orphan workers
                        stop.set()
                        return
                    if "drain" in message:
                        serving.cancel()  # new connections go to the other workers
                        await member.drain()
                        stop.set()
                        return

            nursery.start_soon(on_signal)
            nursery.start_soon(on_control)
            await stop.wait()
            nursery.cancel_scope.cancel()
    await control.aclose()
