"""``python -m benchmarks``: run the suite (see ``benchmarks/_suite.py``)."""

import sys

from benchmarks._suite import main

sys.exit(main())
