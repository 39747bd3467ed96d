"""``trio-durable dev``: serve with reload on change, a request log and optional local HTTPS.

What ``wrangler dev`` gives a Workers developer. The command is a small
supervisor: it starts the server as a child process (``_devchild``, which is
``serve`` plus a line per request), watches the ``.py`` files under the
current directory with ``watchfiles``, and when one changes it stops the
child (SIGTERM: WebSockets get 1001, writes are committed) and starts a
fresh one, so the app's code is really imported again (as ``uvicorn
--reload`` does). The port is chosen once, so ``--port 0`` keeps one port
across restarts. A child that fails (a syntax error just saved) is started
again on the next change.

``--https`` makes a throwaway certificate authority with ``trustme`` and a
certificate for localhost, 127.0.0.1 and ::1 (and ``--host``), signed by
it; the CA file's path is printed so that a client can trust it.
"""

from __future__ import annotations

import argparse
import errno
import functools
import importlib
import importlib.machinery
import json
import logging
import math
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import trio

from ._common import Commands, UsageError, check_app_spec, prepare_data_dir, url
from ._options import add_settings
from ._serve import start

__all__ = ["add_parser", "run"]

logger = logging.getLogger("trio_durable.dev")

#: Seconds a child has to stop after SIGTERM before it is killed.
STOP_TIMEOUT = 10.0
_WILDCARDS = ("", "0.0.0.0", "::")


def add_parser(commands: Commands) -> None:
    """Add ``dev`` to the command line."""
    parser = commands.add_parser(
        "dev",
        help="serve for development: reload on change, request log, --https",
        description=(
            "Serve MODULE:ATTRIBUTE like `serve` (the same options, flags and config "
            "file; a [dev] table of the file applies to dev only), restarting it whenever "
            "a .py file under the current directory changes, with one log line per "
            "request. Needs the watchfiles package (and trustme for --https): "
            "python -m pip install 'trio_durable[dev]'."
        ),
    )
    add_settings(parser, "dev")
    parser.set_defaults(run=run, own_logging=True)


def run(args: argparse.Namespace) -> int:
    """Run ``dev`` with parsed arguments; returns the exit status."""
    config = start("dev", args)
    module_name, _ = check_app_spec(config["app"])
    data_dir = prepare_data_dir(config["data_dir"])
    _require("watchfiles", "reloading")
    if config["https"]:
        if config["ssl_certfile"] is not None:
            raise UsageError(
                "https makes a certificate for this run; drop it to serve ssl_certfile instead"
            )
        _require("trustme", "--https")
    config.ssl_context()  # a bad certificate file is refused now, not on every restart
    root = Path.cwd()
    # The app (and authenticate) is imported only by the child, anew on each
    # restart; catch a misspelled module here, without running any of its code.
    _find_module(module_name, root)
    if config["authenticate"] is not None:
        _find_module(check_app_spec(config["authenticate"], what="authenticate")[0], root)
    # Ports are chosen once, so that port 0 keeps one port across restarts.
    port = _check_port(config["host"], config["port"])
    values = {**config.values, "port": port, "data_dir": str(data_dir)}
    if config["metrics_port"] is not None:
        values["metrics_port"] = _check_port(config["metrics_host"], config["metrics_port"])
    config = attrs.evolve(config, values=values)
    with _certificate(config["host"], enabled=config["https"]) as certfile:
        child = {
            "config": config.to_json(),
            "certfile": None if certfile is None else str(certfile),
        }
        command = [sys.executable, "-m", "trio_durable._cli._devchild", json.dumps(child)]
        logger.info(
            "dev server for %s on %s; restarts when a .py file under %s changes",
            config["app"],
            url(config["host"], port, https=config["https"] or config["ssl_certfile"] is not None),
            root,
        )
        trio.run(functools.partial(_supervise, command, root))
    return 0


def _find_module(module_name: str, root: Path) -> None:
    top_level = module_name.partition(".")[0]
    if importlib.machinery.PathFinder.find_spec(top_level, [str(root), *sys.path]) is None:
        raise UsageError(f"no module named {top_level!r} (searched from {root})")


def _require(module: str, feature: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UsageError(
            f"{feature} needs the {module} package: python -m pip install 'trio_durable[dev]'"
        ) from None


def _check_port(host: str, port: int) -> int:
    """``port`` if it can be bound now, or a free port for 0 (kept across restarts).

    Refusing a taken port here gives the one-line error at once, instead of a
    child that fails on every restart.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family) as probe:
            # As the server's own listener does, so a port in TIME_WAIT is not "taken".
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
            bound: int = probe.getsockname()[1]
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(f"cannot listen on {host}:{port}: the port is in use") from None
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return bound


@contextmanager
def _certificate(host: str, *, enabled: bool) -> Iterator[Path | None]:
    """A server certificate (with key) signed by a CA made for this run, or None."""
    if not enabled:
        yield None
        return
    import trustme

    names = ["localhost", "127.0.0.1", "::1"]
    if host not in _WILDCARDS and host not in names:
        names.append(host)
    directory = Path(tempfile.mkdtemp(prefix="trio-durable-dev-"))
    try:
        authority = trustme.CA(organization_name="trio-durable dev")
        ca_file = directory / "ca.pem"
        authority.cert_pem.write_to_path(str(ca_file))
        server_file = directory / "server.pem"
        authority.issue_cert(*names).private_key_and_cert_chain_pem.write_to_path(str(server_file))
        logger.info(
            "HTTPS with a certificate for %s made for this run; clients must trust "
            "the CA in %s (curl --cacert %s ...)",
            ", ".join(names),
            ca_file,
            ca_file,
        )
        yield server_file
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def _supervise(command: list[str], root: Path) -> None:
    import anyio

    stop = anyio.Event()
    send, receive = trio.open_memory_channel[list[str]](math.inf)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch, root, stop, send)
            nursery.start_soon(_restart_on_change, command, receive)
            async for signum in signals:
                logger.debug("got %s", signal.Signals(signum).name)
                break
            # The watcher thread polls this event; cancelling alone would
            # wait for its next timeout.
            stop.set()
            nursery.cancel_scope.cancel()


async def _watch(root: Path, stop: Any, send: trio.MemorySendChannel[list[str]]) -> None:
    from watchfiles import PythonFilter, awatch

    # watchfiles logs every batch at INFO; the restart line says the same.
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
    try:
        async for changes in awatch(root, watch_filter=PythonFilter(), stop_event=stop):
            names = sorted({_relative(Path(path), root) for _, path in changes})
            await send.send(names)
    except (OSError, RuntimeError) as exc:
        logger.error("cannot watch %s for changes (%s); reloading is off", root, exc)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


async def _restart_on_change(
    command: list[str], changes: trio.MemoryReceiveChannel[list[str]]
) -> None:
    while True:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_run_child, command)
            changed = await changes.receive()
            while True:  # one restart for a burst of saves
                try:
                    changed += changes.receive_nowait()
                except trio.WouldBlock:
                    break
            logger.info("%s changed; restarting", ", ".join(sorted(set(changed))))
            nursery.cancel_scope.cancel()


async def _run_child(command: list[str]) -> None:
    result = await trio.run_process(
        command, check=False, stdin=subprocess.DEVNULL, deliver_cancel=_terminate
    )
    # On Ctrl-C the child gets SIGINT too and may exit before our own cancel
    # arrives: let that cancel win, rather than announce a restart.
    await trio.lowlevel.checkpoint()
    if result.returncode == 0:
        logger.info("the app stopped; it starts again on the next change")
    else:
        logger.warning(
            "the app exited with status %d; it starts again on the next change",
            result.returncode,
        )


async def _terminate(process: trio.Process) -> None:
    process.terminate()
    with trio.move_on_after(STOP_TIMEOUT):
        await process.wait()
        return
    logger.warning("the app did not stop within %.0f s of SIGTERM; killing it", STOP_TIMEOUT)
    process.kill()
