"""Tuning Python's garbage collector for many live objects (``open_runtime(tune_gc=True)``).

The collector's settings belong to the process, while runtimes may open and
close in any order (several in one process, or in threads). So the tuning is
counted: the first tuned runtime to open applies it, the last one to close
restores what was there before, whatever the order in between.
"""

from __future__ import annotations

import gc
import threading
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


class _Tuning:
    """The process's count of open tuned runtimes, and what to restore after the last."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # runtimes may run in several threads
        self.open = 0
        self.previous_thresholds: tuple[int, int, int] = gc.get_threshold()
        # Whether the last close unfreezes: only when nothing was frozen
        # before (an application's own gc.freeze() is kept).
        self.unfreeze = False

    def enter(self) -> None:
        with self.lock:
            self.open += 1
            if self.open > 1:
                return
            self.previous_thresholds = gc.get_threshold()
            self.unfreeze = gc.get_freeze_count() == 0
            gc.freeze()
            gc.set_threshold(*TUNED_GC_THRESHOLDS)

    def exit(self) -> None:
        with self.lock:
            self.open -= 1
            if self.open > 0:
                return
            if gc.get_threshold() == TUNED_GC_THRESHOLDS:
                # Not when the application set its own meanwhile: they stay.
                gc.set_threshold(*self.previous_thresholds)
            if self.unfreeze:
                gc.unfreeze()


_tuning: Final = _Tuning()


@contextmanager
def tuned_gc(enabled: bool) -> Iterator[None]:
    """Freeze what exists at start-up and raise the collector's thresholds, then restore.

    Everything imported and built before the runtime opened (modules,
    classes, the app) is moved out of the collector's sight with
    ``gc.freeze()``, so a full collection no longer walks it; and young
    collections run less often. Only when asked: this is process-wide state.

    With several tuned runtimes, the first to open tunes and the last to
    close restores: the thresholds it found (unless they were changed
    meanwhile), and ``gc.unfreeze()`` only when nothing was frozen before,
    so that an application's own ``gc.freeze()`` stays in force (what the
    runtime froze then stays frozen too).
    """
    if not enabled:
        yield
        return
    _tuning.enter()
    try:
        yield
    finally:
        _tuning.exit()
