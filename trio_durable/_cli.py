"""The ``trio-durable`` command (also ``python -m trio_durable``).

::

    trio-durable serve examples.chat:app --host 127.0.0.1 --port 8787 --data-dir ./data

``serve`` imports ``module:attribute`` from the current directory (as
``uvicorn module:app`` does), expects an :class:`~trio_durable.App` there,
opens a runtime on ``--data-dir`` and serves the app's worker until SIGINT
(Ctrl-C) or SIGTERM; then it stops serving, closes the runtime (open
WebSockets get Close 1001, pending writes are committed) and exits 0.

A bad argument (unknown module, port in use, unwritable data directory)
prints one line to stderr and exits 2.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import importlib
import logging
import os
import signal
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import trio

from ._app import App
from ._exceptions import StorageError
from ._gateway._serve import serve
from ._runtime import open_runtime

__all__ = ["main"]

logger = logging.getLogger("trio_durable.cli")

#: Exit status of a bad argument (as argparse's own).
USAGE_ERROR = 2
_LOG_LEVELS = ("debug", "info", "warning", "error")


class UsageError(Exception):
    """A bad argument: one line on stderr, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse prints the whole usage first; one line is enough to act on.
        self.exit(USAGE_ERROR, f"trio-durable: error: {message} (see --help)\n")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="trio-durable",
        description="Durable Objects for Python, on Trio.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    run = commands.add_parser(
        "serve",
        help="serve an app over HTTP and WebSocket",
        description=(
            "Serve MODULE:ATTRIBUTE (a trio_durable.App) over HTTP/1.1 and WebSocket. "
            "The module is imported from the current directory. Stop with Ctrl-C or SIGTERM."
        ),
    )
    run.add_argument("app", metavar="MODULE:ATTRIBUTE", help="the app, e.g. examples.chat:app")
    run.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    run.add_argument(
        "--port", type=int, default=8787, help="port to listen on; 0 picks a free one (8787)"
    )
    run.add_argument("--data-dir", default="data", help="directory of the durable storage (./data)")
    run.add_argument(
        "--log-level", default="info", choices=_LOG_LEVELS, help="logging level (info)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (the console script exits with it)."""
    args = _build_parser().parse_args(argv)
    _configure_logging(args.log_level)
    try:
        app = load_app(args.app)
        if not 0 <= args.port <= 65535:
            raise UsageError(f"--port must be from 0 to 65535, got {args.port}")
        data_dir = prepare_data_dir(args.data_dir)
        trio.run(
            functools.partial(
                _serve, app, args.app, host=args.host, port=args.port, data_dir=data_dir
            )
        )
    except UsageError as exc:
        print(f"trio-durable: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:  # Ctrl-C before the signal handler was installed
        return 130
    return 0


def load_app(spec: str) -> App:
    """Import ``module:attribute`` (from the current directory first) and check it is an App.

    Raises:
        UsageError: the spec is malformed, the import fails or the
            attribute is missing or not an :class:`~trio_durable.App`.
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise UsageError(f"the app must look like MODULE:ATTRIBUTE, got {spec!r}")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise UsageError(f"no module named {module_name!r} (searched from {cwd})") from None
        raise UsageError(f"cannot import {module_name!r}: {exc}") from None
    except Exception as exc:
        raise UsageError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from None
    target: object = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise UsageError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if not isinstance(target, App):
        raise UsageError(
            f"{spec} is a {type(target).__name__}, not a trio_durable.App "
            "(App(worker=..., objects={...}))"
        )
    return target


def prepare_data_dir(path: str) -> Path:
    """Create the data directory if needed and check that it can be written.

    Raises:
        UsageError: it cannot be created or written.
    """
    data_dir = Path(path)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / f".trio-durable-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(
            f"data directory {path!r} is not writable: {exc.strerror or exc}"
        ) from None
    return data_dir


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


async def _serve(app: App, spec: str, *, host: str, port: int, data_dir: Path) -> None:
    listen_error: OSError | None = None
    url = ""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        stack = contextlib.AsyncExitStack()
        try:
            runtime = await stack.enter_async_context(
                open_runtime(app.objects, data_dir, env=app.env)
            )
        except (StorageError, sqlite3.Error, OSError) as exc:
            raise UsageError(f"cannot open the storage in {str(data_dir)!r}: {exc}") from None
        # Leaving the stack closes the runtime: WebSockets get 1001, writes commit.
        async with stack, trio.open_nursery() as nursery:
            try:
                bound: int = await nursery.start(
                    functools.partial(serve, runtime, app.worker, host=host, port=port)
                )
            except OSError as exc:
                listen_error = exc
            else:
                url = _url(host, bound)
                logger.info("serving %s on %s (data in %s)", spec, url, data_dir)
                async for signum in signals:
                    logger.debug("got %s", signal.Signals(signum).name)
                    break
            nursery.cancel_scope.cancel()
    if listen_error is not None:
        raise UsageError(_listen_error(host, port, listen_error))
    logger.info("stopped serving %s on %s; storage flushed", spec, url)


def _listen_error(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"cannot listen on {host}:{port}: the port is in use"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"


class _QuietStartFilter(logging.Filter):
    """Drop the gateway's own "serving on" line: the command logs a better one."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.name == "trio_durable.gateway"
            and record.levelno == logging.INFO
            and str(record.msg).startswith("serving on")
        )


def _configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    )
    if level != "debug":
        handler.addFilter(_QuietStartFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level.upper())
