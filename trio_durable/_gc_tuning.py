"""Tuning Python's garbage collector for many live objects (``open_runtime(tune_gc=True)``)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

__all__ = ["TUNED_GC_THRESHOLDS", "tuned_gc"]

#: The collector's thresholds while a runtime with ``tune_gc=True`` is open:
#: young collections about fourteen times rarer than Python's default (700).
#: Chosen by the young-threshold sweep of ``python -m benchmarks.bench_rpc``
#: (the collector's share of activation CPU: ~50% at 700, 35-38% at 2,000,
#: 22-26% at 10,000; ``docs/benchmarks.md``, activations). Higher values
#: cut it further in short runs but leave more garbage between collections.
TUNED_GC_THRESHOLDS: Final = (10_000, 10, 10)


@contextmanager
def tuned_gc(enabled: bool) -> Iterator[None]:
    """Freeze what exists at start-up and raise the collector's thresholds, then restore.

    Everything imported and built before the runtime opened (modules,
    classes, the app) is moved out of the collector's sight with
    ``gc.freeze()``, so a full collection no longer walks it; and young
    collections run less often. Only when asked: this is process-wide state.
    """
    if not enabled:
        yield
        return
    previous = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(*TUNED_GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()
