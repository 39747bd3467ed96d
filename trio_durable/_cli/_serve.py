"""``trio-durable serve``: one process serving an App until SIGINT or SIGTERM.

With ``--workers N`` (N > 1) or ``--database`` it runs a cluster's
supervisor instead (``_cluster/_supervisor.py``), where SIGHUP is a rolling
restart. One process cannot restart without closing its connections, so a
single-process ``serve`` answers SIGHUP with a log line saying so, and goes
on serving (rather than die of the signal's default action).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import json
import logging
import signal
import sqlite3
import ssl
from pathlib import Path
from typing import Any

import attrs
import trio

from .._app import App
from .._cluster._supervisor import SERVE_CLUSTER_COMMAND, ClusterOptions, run_cluster
from .._exceptions import StorageError
from .._gateway._options import ServeOptions
from .._gateway._serve import Worker, drain, serve
from .._http import Request, Response
from .._runtime import Runtime, RuntimeOptions, open_runtime
from .._storage._sqlite import SqliteBackend
from ._common import Commands, UsageError, configure_logging, load_app, prepare_data_dir, url
from ._metrics import serve_metrics
from ._options import CONFIG_NAME, SETTINGS, Config, add_settings, resolve, settings_of

__all__ = [
    "WORKER_OPTIONS_FLAG",
    "add_parser",
    "logged_worker",
    "run",
    "serve_app",
    "serve_cluster",
    "start",
    "worker_args",
    "worker_config",
    "worker_options",
]

logger = logging.getLogger("trio_durable.cli")
access_logger = logging.getLogger("trio_durable.access")

#: Seconds a stopping server gives the HTTP requests in flight to be answered.
DRAIN_SECONDS = 10.0


def add_parser(commands: Commands) -> None:
    """Add ``serve`` to the command line."""
    parser = commands.add_parser(
        "serve",
        help="serve an app over HTTP and WebSocket",
        description=(
            "Serve MODULE:ATTRIBUTE (a trio_durable.App) over HTTP/1.1 and WebSocket. "
            "The module is imported from the current directory. Every option of serve() "
            f"and open_runtime() is a flag here and a key of ./{CONFIG_NAME} (or of "
            "[tool.trio-durable] in ./pyproject.toml); flags win over the file. "
            "Stop with Ctrl-C or SIGTERM."
        ),
    )
    add_settings(parser, "serve")
    parser.set_defaults(run=run, own_logging=True)


def start(command: str, args: argparse.Namespace) -> Config:
    """Resolve ``command``'s settings and configure logging at their level.

    Raises:
        UsageError: a setting is refused, or no app is named.
    """
    config = resolve(command, args)
    # What main() reports a later error with (a traceback at debug level).
    args.log_level = config["log_level"]
    configure_logging(config["log_level"])
    if config["app"] is None:
        raise UsageError(
            f"name the app: trio-durable {command} MODULE:ATTRIBUTE, or app = "
            f'"module:app" in {CONFIG_NAME}'
        )
    return config


def run(args: argparse.Namespace) -> int:
    """Run ``serve`` with parsed arguments; returns the exit status."""
    config = start("serve", args)
    app = load_app(config["app"])
    database: str | None = config["database"]
    if database is not None:
        if "data_dir" in config.given:
            raise UsageError("pass only one of --data-dir and --database")
        _check_database(database)
    if database is None:
        for name in ("node", "link_host"):
            if config[name] is not None:
                raise UsageError(f"{name} is for a node of a deployment on --database")
        data_dir = prepare_data_dir(config["data_dir"])
        config = attrs.evolve(config, values={**config.values, "data_dir": str(data_dir)})
    serve_kwargs = config.serve_kwargs()  # a bad certificate or authenticate: refused now
    if config["workers"] > 1 or database is not None:
        if config["metrics_port"] is not None:
            raise UsageError(
                "metrics_port is not available with workers > 1 or --database yet: "
                "each worker process counts its own objects"
            )
        options = ClusterOptions(
            app=config["app"],
            workers=config["workers"],
            host=config["host"],
            port=config["port"],
            data_dir=config["data_dir"],
            database=database,
            node=config["node"],
            link_host=config["link_host"],
            lease_seconds=config["lease_seconds"],
            log_level=config["log_level"],
            worker_args=worker_args(config),
        )
        trio.run(
            functools.partial(serve_cluster, options, https=serve_kwargs["ssl_context"] is not None)
        )
        return 0
    trio.run(functools.partial(serve_app, app, config, serve_kwargs=serve_kwargs))
    return 0


#: The option of ``trio-durable worker`` that carries the resolved settings (JSON).
WORKER_OPTIONS_FLAG = "--options"


#: The settings a cluster's workers take from their supervisor (the rest are the command's).
_WORKER_TARGETS = frozenset({"serve", "runtime", "tls", "import", "backend"})


def worker_args(config: Config) -> tuple[str, ...]:
    """What a cluster's workers get on their command line for the options set.

    ``("--options", JSON)`` (see :meth:`Config.to_json`) when the file or the
    command line set an option of ``serve``, ``open_runtime`` or the SQLite
    storage (a setting whose target is ``serve``, ``tls``, ``import``,
    ``runtime`` or ``backend``) other than the address; nothing otherwise (the worker's own
    arguments carry the app, the address, the data directory and the log
    level).
    """
    if any(
        _target(name) in _WORKER_TARGETS and name not in ("host", "port") for name in config.given
    ):
        return (WORKER_OPTIONS_FLAG, config.to_json())
    return ()


def worker_config(text: str) -> Config:
    """The settings a cluster's worker was given in its ``--options``, their names checked.

    ``text`` is what :meth:`Config.to_json` wrote (``serve --workers N``), or
    the same form with only the options given (``td.serve_cluster(...,
    **options)``): the others take their defaults.

    Raises:
        UsageError: an option is unknown, or not one a worker takes from
            ``td.serve_cluster`` (the message names it); values are checked
            by :func:`worker_options`.
    """
    data = json.loads(text)
    values: dict[str, Any] = data["values"]
    known = {s.name: s for s in settings_of("serve")}
    unknown = sorted(name for name in values if name not in known)
    if unknown:
        raise UsageError(
            f"unknown option {unknown[0]!r} for a cluster's workers (the options are the "
            "keyword arguments of open_runtime() and serve(), and durability and max_open_sql)"
        )
    if data["command"] == SERVE_CLUSTER_COMMAND:
        for name in values:
            if known[name].target not in _WORKER_TARGETS or name in ("host", "port"):
                raise UsageError(f"{name} is not an option of a cluster's workers")
    return Config(
        "serve",
        {**{name: s.default for name, s in known.items()}, **values},
        frozenset(data["given"]),
    )


def worker_options(
    text: str | None,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """What a cluster's worker passes to ``open_runtime``, ``serve`` and its storage.

    Each is built once (a TLS certificate is loaded, ``authenticate``
    imported) and checked by the record that owns it, before anything starts.

    Args:
        text: The JSON its supervisor passed (:func:`worker_config`), or
            ``None`` when none was passed.

    Returns:
        ``(open_runtime keyword arguments, serve keyword arguments,
        SqliteBackend keyword arguments)``; the serve ones never have
        ``host`` or ``port``.

    Raises:
        UsageError: an option is unknown or refused, a certificate cannot be
            loaded, or ``authenticate`` cannot be imported.
    """
    if text is None:
        return {"tune_gc": True}, {}, {}
    config = worker_config(text)
    runtime, serving, backend = (
        config.runtime_kwargs(),
        config.serve_kwargs(),
        config.backend_kwargs(),
    )
    try:
        RuntimeOptions(**runtime)
        ServeOptions(host="127.0.0.1", port=0, **serving)
        SqliteBackend(None, **backend)  # checks only: no file, no thread
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    return runtime, serving, backend


def _target(name: str) -> str:
    return next(s.target for s in SETTINGS if s.name == name)


async def serve_app(
    app: App,
    config: Config,
    *,
    serve_kwargs: dict[str, Any] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    """Serve ``app`` with ``config`` until SIGINT or SIGTERM, then close the runtime cleanly.

    Args:
        app: The app.
        config: The resolved settings of ``serve`` or ``dev``.
        serve_kwargs: ``config.serve_kwargs()`` when already built.
        ssl_context: A TLS context to use instead of the configured one
            (``dev --https``).

    Raises:
        UsageError: the storage cannot be opened or a port cannot be bound.
    """
    spec: str = config["app"]
    host: str = config["host"]
    port: int = config["port"]
    data_dir = Path(config["data_dir"])
    kwargs = dict(serve_kwargs) if serve_kwargs is not None else config.serve_kwargs()
    if ssl_context is not None:
        kwargs["ssl_context"] = ssl_context
    listen_error: tuple[str, int, OSError] | None = None
    metrics_url: str | None = None
    base_url = ""
    worker = logged_worker(app.worker)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        stack = contextlib.AsyncExitStack()
        try:
            backend = SqliteBackend(data_dir, **config.backend_kwargs())
            runtime = await stack.enter_async_context(
                open_runtime(app.objects, backend=backend, env=app.env, **config.runtime_kwargs())
            )
        except (StorageError, sqlite3.Error, OSError) as exc:
            raise UsageError(f"cannot open the storage in {str(data_dir)!r}: {exc}") from exc
        # Leaving the stack closes the runtime: WebSockets get 1001, writes commit.
        async with stack, trio.open_nursery() as nursery:
            try:
                bound: int = await nursery.start(
                    functools.partial(serve, runtime, worker, host=host, port=port, **kwargs)
                )
            except OSError as exc:
                listen_error = (host, port, exc)
            else:
                listen_error, metrics_url = await _start_metrics(nursery, runtime, config)
            if listen_error is None:
                base_url = url(host, bound, https=kwargs["ssl_context"] is not None)
                logger.info("serving %s on %s (data in %s)", spec, base_url, data_dir)
                if metrics_url is not None:
                    logger.info("metrics on %s", metrics_url)
                signum = await _stop_signal(signals)
                logger.debug("got %s", signal.Signals(signum).name)
                # Requests in flight are answered; a second signal stops at once.
                with trio.move_on_after(DRAIN_SECONDS):
                    async with trio.open_nursery() as draining:
                        draining.start_soon(_cancel_on_signal, signals, draining.cancel_scope)
                        await drain(runtime)
                        draining.cancel_scope.cancel()
            nursery.cancel_scope.cancel()
    if listen_error is not None:
        raise UsageError(_listen_error(*listen_error))
    logger.info("stopped serving %s on %s; storage flushed", spec, base_url)


async def _start_metrics(
    nursery: trio.Nursery, runtime: Runtime, config: Config
) -> tuple[tuple[str, int, OSError] | None, str | None]:
    """Serve the metrics port if one is configured: ``(listen error, metrics URL)``."""
    port: int | None = config.values.get("metrics_port")
    if port is None:
        return None, None
    host: str = config["metrics_host"]
    try:
        bound: int = await nursery.start(serve_metrics, runtime, host, port)
    except OSError as exc:
        return (host, port, exc), None
    return None, url(host, bound) + "/metrics"


async def serve_cluster(options: ClusterOptions, *, https: bool = False) -> None:
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
                url(options.host, bound, https=https),
                options.workers,
                options.data_dir if options.database is None else _hidden(options.database),
            )
    except* (StorageError, ValueError) as group:
        raise UsageError(str(group.exceptions[0])) from None
    except* OSError as group:
        error = group.exceptions[0]
        assert isinstance(error, OSError)
        raise UsageError(_listen_error(options.host, options.port, error)) from None
    logger.info("stopped serving %s; every worker stopped", options.app)


def _hidden(database: str) -> str:
    """The database URL without its password (for logs)."""
    from .._storage._postgres import check_database_url

    return check_database_url(database)


def _check_database(database: str) -> None:
    """Refuse a URL libpq cannot use, or a missing driver, before any worker starts.

    Raises:
        UsageError: the URL is bad or psycopg is not installed.
    """
    try:
        from .._storage._postgres import check_database_url
    except ImportError as exc:
        raise UsageError(
            f"--database needs psycopg 3 and psycopg_pool ({exc}); "
            "install them with: pip install 'trio_durable[postgres]'"
        ) from None
    try:
        check_database_url(database)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


async def _stop_signal(signals: Any) -> int:
    """The next signal that stops the server (SIGHUP is logged and ignored)."""
    async for signum in signals:
        if signum != signal.SIGHUP:
            return int(signum)
        _ignore_sighup()
    raise AssertionError("the signal stream never ends")


async def _cancel_on_signal(signals: Any, scope: trio.CancelScope) -> None:
    await _stop_signal(signals)
    scope.cancel()


def _ignore_sighup() -> None:
    logger.warning(
        "SIGHUP ignored: this server is one process, which cannot restart without "
        "closing its connections; for rolling restarts on SIGHUP, run serve --workers 2 "
        "or more"
    )


def _listen_error(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"cannot listen on {host}:{port}: the port is in use"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"


def logged_worker(worker: Worker) -> Worker:
    """``worker``, logging one line per request: client, method, path, status, duration.

    The path is logged without its query string, which may carry tokens.
    A WebSocket upgrade shows as status 101 once the object accepted it.
    When ``trio_durable.access`` does not log INFO, ``worker`` itself is
    returned: a quiet server pays nothing per request.
    """
    if not access_logger.isEnabledFor(logging.INFO):
        return worker

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
