"""``trio-durable worker``: one worker process of a cluster (started by its supervisor).

Not for people: ``trio-durable serve --workers N`` starts these. A worker
inherits the listening socket, the data directory's lock (or the database
URL, in its environment) and a control channel from its supervisor, opens
a runtime that joins the deployment, serves the app on the shared socket,
and says it is ready.
It stops on SIGTERM or SIGINT, or when its supervisor goes away (the
control channel ends); told to *drain*, it hands its shards and sockets
over to its successor and exits.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import signal
import socket
from typing import Any

import trio

from .._app import App
from .._cluster._control import ControlChannel
from .._cluster._member import ClusterSpec
from .._cluster._supervisor import DATABASE_VARIABLE
from .._gateway._serve import drain, serve
from .._runtime import open_runtime
from .._storage._sqlite import SqliteBackend
from ._common import LOG_LEVELS, Commands, UsageError, load_app
from ._serve import DRAIN_SECONDS, WORKER_OPTIONS_FLAG, logged_worker, worker_options

__all__ = ["add_parser", "run", "run_worker"]

logger = logging.getLogger("trio_durable.cli")

#: Seconds a stopping worker gives the other workers' calls in flight to be answered.
LINKS_SECONDS = 10.0


def add_parser(commands: Commands) -> None:
    """Add the (hidden) ``worker`` command."""
    parser = commands.add_parser("worker", help=argparse.SUPPRESS)
    parser.add_argument("app", metavar="MODULE:ATTRIBUTE")
    parser.add_argument("--slot", type=int, required=True)
    # A data directory and its lock, or (with the database URL in the
    # environment) this node's name and link address.
    parser.add_argument("--data-dir")
    parser.add_argument("--lock-fd", type=int)
    parser.add_argument("--node", default="")
    parser.add_argument("--link-host")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--listen-fd", type=int, required=True)
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--lease-seconds", type=float, default=4.0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    # The supervisor's resolved options of serve and open_runtime, as JSON.
    parser.add_argument(WORKER_OPTIONS_FLAG, dest="options", default=None)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run one worker until it is told to stop; returns the exit status.

    Raises:
        UsageError: the app cannot be imported or the options are refused
            (the supervisor is told first: every worker would fail the same
            way, so it stops rather than restart them).
    """
    try:
        app = load_app(args.app)
        runtime_options, serve_options, backend_options = worker_options(args.options)
    except UsageError as exc:
        _refuse(args.control_fd, str(exc))
        raise
    spec = ClusterSpec(
        slot=args.slot,
        run_dir=args.run_dir,
        lease_seconds=args.lease_seconds,
        node=args.node,
        link_host=args.link_host,
    )
    database = os.environ.pop(DATABASE_VARIABLE, None)
    if database is not None:
        storage: dict[str, Any] = {"database": database}
    else:
        backend = SqliteBackend(args.data_dir, lock_fd=args.lock_fd, **backend_options)
        storage = {"backend": backend}
    trio.run(
        functools.partial(
            run_worker,
            app,
            spec,
            storage=storage,
            listen_fd=args.listen_fd,
            control_fd=args.control_fd,
            host=args.host,
            runtime_options=runtime_options,
            serve_options=serve_options,
        )
    )
    return 0


def _refuse(control_fd: int, reason: str) -> None:
    """Tell the supervisor that this worker refuses its options, before exiting."""
    with socket.socket(fileno=control_fd) as control, contextlib.suppress(OSError):
        control.sendall(json.dumps({"refused": reason}).encode() + b"\n")


async def run_worker(
    app: App,
    spec: ClusterSpec,
    *,
    storage: dict[str, Any],
    listen_fd: int,
    control_fd: int,
    host: str,
    runtime_options: dict[str, Any] | None = None,
    serve_options: dict[str, Any] | None = None,
) -> None:
    """Serve ``app`` as one worker of a cluster until told to stop.

    ``storage`` is ``open_runtime``'s ``backend`` or ``database``;
    ``runtime_options`` and ``serve_options`` are keyword arguments of
    ``open_runtime`` and ``serve`` (the options the supervisor was given).
    """
    runtime_kwargs = {"tune_gc": True} if runtime_options is None else runtime_options
    serve_kwargs = serve_options or {}
    listener = socket.socket(fileno=listen_fd)
    control = ControlChannel(trio.socket.from_stdlib_socket(socket.socket(fileno=control_fd)))
    port = listener.getsockname()[1]
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with (
            open_runtime(
                app.objects, env=app.env, cluster=spec, **storage, **runtime_kwargs
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
                        logged_worker(app.worker),
                        host=host,
                        port=port,
                        sock=listener,
                        task_status=task_status,
                        **serve_kwargs,
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
                        # New connections go to the other workers; the
                        # requests in flight here are answered first.
                        await finish_requests()
                        await member.drain()
                        stop.set()
                        return

            async def finish_requests() -> None:
                with trio.move_on_after(DRAIN_SECONDS):
                    await drain(runtime)
                serving.cancel()

            nursery.start_soon(on_signal)
            nursery.start_soon(on_control)
            await stop.wait()
            await finish_requests()
            # The other workers' calls already sent here are answered (their
            # objects moved: "moved", and they ask the new owner) before the
            # links close; later ones go elsewhere.
            with trio.move_on_after(LINKS_SECONDS):
                await member.close_links()
            nursery.cancel_scope.cancel()
    await control.aclose()
