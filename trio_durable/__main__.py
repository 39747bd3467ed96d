"""``python -m trio_durable``: the same command line as ``trio-durable``."""

from __future__ import annotations

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
