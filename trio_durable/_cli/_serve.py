"""``trio-durable serve``: one process serving an App until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import logging
import signal
import sqlite3
import ssl
from pathlib import Path

import trio

from .._app import App
from .._cluster._supervisor import ClusterOptions, run_cluster
from .._exceptions import StorageError
from .._gateway._serve import Worker, serve
from .._http import Request, Response
from .._runtime import Runtime, open_runtime
from ._common import LOG_LEVELS, Commands, UsageError, check_port, load_app, prepare_data_dir, url

__all__ = ["add_parser", "logged_worker", "run", "serve_app"]

logger = logging.getLogger("trio_durable.cli")
access_logger = logging.getLogger("trio_durable.access")


def add_parser(commands: Commands) -> None:
    """Add ``serve`` to the command line."""
    parser = commands.add_parser(
        "serve",
        help="serve an app over HTTP and WebSocket",
        description=(
            "Serve MODULE:ATTRIBUTE (a trio_durable.App) over HTTP/1.1 and WebSocket. "
            "The module is imported from the current directory. Stop with Ctrl-C or SIGTERM."
        ),
    )
    add_server_arguments(parser)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help=(
            "worker processes serving the port, one live instance per object across "
            "them (1: this process serves); SIGHUP restarts them one by one"
        ),
    )
    parser.set_defaults(run=run)


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments ``serve`` and ``dev`` share."""
    parser.add_argument("app", metavar="MODULE:ATTRIBUTE", help="the app, e.g. examples.chat:app")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8787, help="port to listen on; 0 picks a free one (8787)"
    )
    parser.add_argument(
        "--data-dir", default="data", help="directory of the durable storage (./data)"
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=LOG_LEVELS,
        help="logging level (info); debug also shows tracebacks of errors at start",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``serve`` with parsed arguments; returns the exit status."""
    app = load_app(args.app)
    check_port(args.port)
    data_dir = prepare_data_dir(args.data_dir)
    workers = getattr(args, "workers", 1)
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    if workers > 1:
        options = ClusterOptions(
            app=args.app,
            workers=workers,
            host=args.host,
            port=args.port,
            data_dir=str(data_dir),
            log_level=args.log_level,
        )
        trio.run(serve_cluster, options)
        return 0
    trio.run(
        functools.partial(
            serve_app, app, args.app, host=args.host, port=args.port, data_dir=data_dir
        )
    )
    return 0


async def serve_app(
    app: App,
    spec: str,
    *,
    host: str,
    port: int,
    data_dir: Path,
    ssl_context: ssl.SSLContext | None = None,
    log_requests: bool = False,
) -> None:
    """Serve ``app`` until SIGINT or SIGTERM, then close the runtime cleanly.

    Raises:
        UsageError: the storage cannot be opened or the port cannot be bound.
    """
    listen_error: OSError | None = None
    base_url = ""
    worker = logged_worker(app.worker) if log_requests else app.worker
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        stack = contextlib.AsyncExitStack()
        try:
            runtime = await stack.enter_async_context(
                open_runtime(app.objects, data_dir, env=app.env, tune_gc=True)
            )
        except (StorageError, sqlite3.Error, OSError) as exc:
            raise UsageError(f"cannot open the storage in {str(data_dir)!r}: {exc}") from exc
        # Leaving the stack closes the runtime: WebSockets get 1001, writes commit.
        async with stack, trio.open_nursery() as nursery:
            try:
                bound: int = await nursery.start(
                    functools.partial(
                        serve, runtime, worker, host=host, port=port, ssl_context=ssl_context
                    )
                )
            except OSError as exc:
                listen_error = exc
            else:
                base_url = url(host, bound, https=ssl_context is not None)
                logger.info("serving %s on %s (data in %s)", spec, base_url, data_dir)
                async for signum in signals:
                    logger.debug("got %s", signal.Signals(signum).name)
                    break
            nursery.cancel_scope.cancel()
    if listen_error is not None:
        raise UsageError(_listen_error(host, port, listen_error))
    logger.info("stopped serving %s on %s; storage flushed", spec, base_url)


async def serve_cluster(options: ClusterOptions) -> None:
    """Run a cluster's supervisor until SIGTERM or SIGINT.

    Raises:
        UsageError: the data directory is in use or the port cannot be bound.
    """
    try:
        async with trio.open_nursery() as nursery:
            bound: int = await nursery.start(run_cluster, options)
            logger.info(
                "serving %s on %s with %d workers (data in %s)",
                options.app,
                url(options.host, bound),
                options.workers,
                options.data_dir,
            )
    except* StorageError as group:
        raise UsageError(str(group.exceptions[0])) from None
    except* OSError as group:
        error = group.exceptions[0]
        assert isinstance(error, OSError)
        raise UsageError(_listen_error(options.host, options.port, error)) from None
    logger.info("stopped serving %s; every worker stopped", options.app)


def _listen_error(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"cannot listen on {host}:{port}: the port is in use"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"


def logged_worker(worker: Worker) -> Worker:
    """``worker``, logging one line per request: client, method, path, status, duration.

    The path is logged without its query string, which may carry tokens.
    A WebSocket upgrade shows as status 101 once the object accepted it.
    """

    async def logged(request: Request, runtime: Runtime) -> Response:
        start = trio.current_time()
        client = f"{request.client[0]}:{request.client[1]}" if request.client else "-"
        try:
            response = await worker(request, runtime)
        except BaseException as exc:
            access_logger.info(
                '%s "%s %s" raised %s after %.1f ms',
                client,
                request.method,
                request.path,
                type(exc).__name__,
                (trio.current_time() - start) * 1000,
            )
            raise
        access_logger.info(
            '%s "%s %s" %d %.1f ms',
            client,
            request.method,
            request.path,
            response.status,
            (trio.current_time() - start) * 1000,
        )
        return response

    return logged
