"""The serving child of ``trio-durable dev`` (private; the supervisor starts it).

``python -m trio_durable._cli._devchild CONFIG`` with ``CONFIG`` a JSON object
(``app``, ``host``, ``port``, ``data_dir``, ``log_level``, ``certfile``).
It is ``serve`` plus a request log and, with a ``certfile``, HTTPS. Being a
fresh process is the point: the app's modules are imported anew on each
restart.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import ssl
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import trio

from ._common import UsageError, configure_logging, load_app, report_usage_error
from ._serve import serve_app

__all__ = ["main"]


def main(argv: Sequence[str]) -> int:
    """Serve the app described by ``argv[0]`` until SIGINT or SIGTERM; returns the exit status."""
    config = json.loads(argv[0])
    configure_logging(config["log_level"])
    threading.Thread(target=_stop_when_orphaned, args=(os.getppid(),), daemon=True).start()
    try:
        app = load_app(config["app"])
        ssl_context: ssl.SSLContext | None = None
        if config["certfile"] is not None:
            ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_context.load_cert_chain(config["certfile"])
        trio.run(
            functools.partial(
                serve_app,
                app,
                config["app"],
                host=config["host"],
                port=config["port"],
                data_dir=Path(config["data_dir"]),
                ssl_context=ssl_context,
                log_requests=True,
            )
        )
    except UsageError as exc:
        return report_usage_error(exc, config["log_level"])
    except KeyboardInterrupt:
        return 130
    return 0


def _stop_when_orphaned(parent: int) -> None:
    # A supervisor killed with SIGKILL cannot stop its child: the child notices
    # it was re-parented and stops itself cleanly, as on SIGTERM.
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
