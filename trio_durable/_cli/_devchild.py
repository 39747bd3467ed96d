"""The serving child of ``trio-durable dev`` (private; the supervisor starts it).

``python -m trio_durable._cli._devchild CHILD`` with ``CHILD`` a JSON object:
``config``, the resolved settings (:meth:`Config.to_json`), and
``certfile``, the certificate made for ``--https`` (or ``null``). It is
``serve``, with HTTPS from that certificate. Being a fresh process is the
point: the app's modules are imported anew on each restart.
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

import trio

from ._common import UsageError, configure_logging, load_app, report_usage_error
from ._options import Config
from ._serve import serve_app

__all__ = ["main"]


def main(argv: Sequence[str]) -> int:
    """Serve the app described by ``argv[0]`` until SIGINT or SIGTERM; returns the exit status."""
    child = json.loads(argv[0])
    config = Config.from_json(child["config"])
    configure_logging(config["log_level"])
    threading.Thread(target=_stop_when_orphaned, args=(os.getppid(),), daemon=True).start()
    try:
        app = load_app(config["app"])
        ssl_context: ssl.SSLContext | None = None
        if child["certfile"] is not None:
            ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_context.load_cert_chain(child["certfile"])
        trio.run(functools.partial(serve_app, app, config, ssl_context=ssl_context))
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
