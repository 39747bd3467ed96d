"""The ``trio-durable`` command (also ``python -m trio_durable``).

::

    trio-durable serve examples.chat:app --host 127.0.0.1 --port 8787 --data-dir ./data
    trio-durable dev myapp:app --https
    trio-durable new my-project
    trio-durable --version

One module per command: ``_serve`` (one process serving an App until SIGINT
or SIGTERM), ``_dev`` (a supervisor that restarts a serving child when a
``.py`` file changes, with a request log and optional local HTTPS) and
``_new`` (a project scaffold). A bad argument (unknown module, port in use,
unwritable data directory, ...) prints one line to stderr and exits 2.
"""

from __future__ import annotations

import argparse
import importlib.metadata
from collections.abc import Sequence
from typing import NoReturn

from . import _dev, _new, _serve, _worker
from ._common import USAGE_ERROR, UsageError, configure_logging, report_usage_error

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse prints the whole usage first; one line is enough to act on.
        self.exit(USAGE_ERROR, f"trio-durable: error: {message} (see --help)\n")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="trio-durable",
        description="Durable Objects for Python, on Trio.",
    )
    parser.add_argument("--version", action="version", version=f"trio-durable {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    _serve.add_parser(commands)
    _dev.add_parser(commands)
    _new.add_parser(commands)
    _worker.add_parser(commands)
    return parser


def _version() -> str:
    # The installed distribution's version (what pip reports); the package
    # root is not imported from here (tests/test_layering.py).
    try:
        return importlib.metadata.version("trio_durable")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (the console script exits with it)."""
    args = _build_parser().parse_args(argv)
    log_level: str = getattr(args, "log_level", "info")
    if hasattr(args, "log_level"):  # the serving commands log; `new` only prints
        configure_logging(log_level)
    try:
        status: int = args.run(args)
    except UsageError as exc:
        return report_usage_error(exc, log_level)
    except KeyboardInterrupt:  # Ctrl-C before a signal handler was installed
        return 130
    return status
