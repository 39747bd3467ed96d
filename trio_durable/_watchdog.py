"""The watchdog: notices object code that blocks the event loop.

Every object of a runtime shares one Trio event loop, so a handler that
blocks it (``time.sleep``, a synchronous HTTP call, a long computation)
stalls every other object and every connection. The watchdog cannot prevent
that, but it makes it visible and contains it:

* A small *sampler thread* posts a *ping* into the loop every interval
  (``trio_token.run_sync_soon``) and times, with the real clock, how long
  the loop takes to run it (``time.perf_counter``: the point is wall time
  lost by everybody, which Trio's clock, possibly a ``MockClock``, does not
  see). Nothing runs per task step.
* While a ping waits, the thread finds the Trio task that is running (the
  one whose coroutine is executing) and reads, from that task's context,
  which object's code it runs (the core's ``CURRENT_OBJECT``, set by every
  dispatch into an object: events, background work, the constructor). The
  loop thread's Python frames name the handler (the first user frame inside
  the runtime's innermost call into user code) and the line.
* When the loop answers a ping that waited ``warn_after`` seconds or more,
  a warning names the object, the handler and the line. At ``reset_after``
  seconds or more the object is also reset (as a failed
  ``block_concurrency_while`` would reset it): its callers in flight get
  ``ObjectResetError`` and the next event builds a fresh instance. Other
  objects are untouched. A block is measured to within one interval.
* If the loop is still stuck ten times ``warn_after`` later (an endless
  loop, a deadlock on a thread lock), the sampler thread logs that too, once,
  while the loop is still stuck.

Blocking outside any object (the worker function, a test body) is logged as
well, by the first watchdog of the Trio run, and resets nothing.

Time spent in the cyclic garbage collector during a step is not counted:
a full collection over a large heap can pause the loop for most of a
second in whatever task happens to allocate, and that is not its fault.

Costs: nothing per task step; a thread that wakes, and one callback in
the loop, every ``min(warn_after, reset_after) / 4`` seconds (at most every
0.25 s). ``open_runtime(blocking_warning_after=None,
blocking_reset_after=None)`` turns it off.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import sysconfig
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from types import CodeType, FrameType
from typing import Final

import attrs
import trio

from ._core._live import CURRENT_OBJECT, LiveObject
from ._core._registry import Registry
from ._limits import WATCHDOG_RESET_AFTER, WATCHDOG_WARN_AFTER

__all__ = [
    "DEFAULT_BLOCKING_RESET_AFTER",
    "DEFAULT_BLOCKING_WARNING_AFTER",
    "Watchdog",
    "open_watchdog",
]

logger: Final = logging.getLogger("trio_durable")

DEFAULT_BLOCKING_WARNING_AFTER: Final = WATCHDOG_WARN_AFTER
DEFAULT_BLOCKING_RESET_AFTER: Final = WATCHDOG_RESET_AFTER

# The sampler thread wakes this often (a fraction of the threshold, bounded).
_MIN_INTERVAL: Final = 0.002
_MAX_INTERVAL: Final = 0.25
# "Still blocked" is logged when a step runs this many times the threshold.
_STILL_BLOCKED_FACTOR: Final = 10

_PACKAGE_DIR: Final = os.path.dirname(os.path.abspath(__file__)) + os.sep
_TRIO_DIR: Final = os.path.dirname(os.path.abspath(trio.__file__)) + os.sep
_STDLIB_DIRS: Final = tuple(
    {os.path.abspath(sysconfig.get_paths()[name]) + os.sep for name in ("stdlib", "platstdlib")}
)
_SITE_DIRS: Final = tuple(
    {os.path.abspath(sysconfig.get_paths()[name]) + os.sep for name in ("purelib", "platlib")}
)

_now: Final = time.perf_counter



class _GcClock:
    """Seconds spent in the cyclic garbage collector, while a watchdog runs.

    A full collection over a large heap can stop the loop for most of a
    second in whatever task happens to allocate: that is not the task's
    fault, so the watchdog does not count it against the step.
    """

    def __init__(self) -> None:
        self.total = 0.0
        self._started = 0.0
        self._users = 0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = _now()
        elif self._started:
            self.total += _now() - self._started
            self._started = 0.0

    def acquire(self) -> None:
        if self._users == 0:
            gc.callbacks.append(self._callback)
        self._users += 1

    def release(self) -> None:
        self._users -= 1
        if self._users == 0:
            with suppress(ValueError):
                gc.callbacks.remove(self._callback)


_gc_clock: Final = _GcClock()

# Watchdogs of the current Trio run, oldest first (the first reports
# blocking that belongs to no object).
_watchdogs: trio.lowlevel.RunVar[list[Watchdog]] = trio.lowlevel.RunVar("trio_durable_watchdogs")


@attrs.frozen
class _Sample:
    """What the sampler thread saw while the loop was stuck."""

    record: LiveObject | None
    handler: str | None
    location: str | None


class Watchdog:
    """Notices a blocked event loop; warns about (and resets) the object at fault.

    Made by :func:`open_watchdog`; one per runtime. Nothing runs per task
    step: a sampler thread posts a *ping* into the loop with
    ``run_sync_soon`` and times how long the loop takes to run it. While a
    ping waits, the thread looks at the loop thread's frames to see which
    object and handler are running; when the loop answers, the watchdog
    reports (and resets) from inside the loop.

    Args:
        registry: The runtime's registry: only its objects are reset.
        warn_after: Seconds of blocking that get a warning, or ``None``.
        reset_after: Seconds of blocking that also reset the object, or ``None``.
    """

    def __init__(
        self, registry: Registry, *, warn_after: float | None, reset_after: float | None
    ) -> None:
        limits = [limit for limit in (warn_after, reset_after) if limit is not None]
        if not limits:
            raise ValueError("a watchdog needs warn_after or reset_after")
        self.registry = registry
        self.warn_after = warn_after
        self.reset_after = reset_after
        self._threshold = min(limits)
        # A block is measured from the first ping it delays, so it is seen
        # to within one interval: a quarter of the lowest limit.
        self._interval = min(max(self._threshold / 4, _MIN_INTERVAL), _MAX_INTERVAL)
        # The ping waiting for the loop: (sent at, GC seconds when sent).
        self._ping: tuple[float, float] | None = None
        self._sample: _Sample | None = None
        self._token = trio.lowlevel.current_trio_token()
        self._root_task = trio.lowlevel.current_root_task()
        self._loop_thread = threading.get_ident()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Objects reset because they blocked the loop past ``reset_after``.
        self.resets = 0

    # ---------------------------------------------------------- the sampler

    def start(self) -> None:
        """Start the sampler thread (and GC accounting)."""
        _gc_clock.acquire()
        self._thread = threading.Thread(
            target=self._watch, name="trio_durable watchdog", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the sampler thread (returns once it has ended)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            _gc_clock.release()

    def _watch(self) -> None:
        reported: tuple[float, float] | None = None
        still_after = self._threshold * _STILL_BLOCKED_FACTOR
        while not self._stop.wait(self._interval):
            ping = self._ping
            if ping is None:
                ping = self._ping = (_now(), _gc_clock.total)
                try:
                    self._token.run_sync_soon(self._pong, ping)
                except trio.RunFinishedError:
                    return
                continue
            age = _now() - ping[0] - (_gc_clock.total - ping[1])
            if age < self._interval:
                continue
            try:
                sample = self._take_sample()
            except Exception:  # a frame vanished under us: try again next time
                continue
            if sample.record is not None or self._sample is None:
                self._sample = sample
            if age >= still_after and reported is not ping:
                reported = ping
                logger.warning(
                    "the event loop is still blocked after %.1f s, by %s",
                    age,
                    _describe(sample.record, sample.handler, sample.location),
                )

    def _take_sample(self) -> _Sample:
        frame = sys._current_frames().get(self._loop_thread)
        if frame is None:
            return _Sample(None, None, None)
        frames = list(_outward(frame))  # innermost first
        record = _object_of(_running_task(self._root_task))
        return _Sample(record, _handler_name(frames, record), _location(frames))

    # ------------------------------------------------------------ reporting

    def _pong(self, ping: tuple[float, float]) -> None:
        """(In the loop) the loop answered: report if it was blocked."""
        elapsed = _now() - ping[0] - (_gc_clock.total - ping[1])
        sample, self._sample = self._sample, None
        if self._ping is ping:
            self._ping = None
        if elapsed >= self._threshold:
            try:
                self._blocked(sample or _Sample(None, None, None), elapsed)
            except Exception:  # run_sync_soon callbacks must not raise
                logger.exception("the blocking watchdog failed")

    def _blocked(self, sample: _Sample, elapsed: float) -> None:
        record = sample.record
        ours = record is not None and record.registry is self.registry
        if record is not None and not ours:
            return  # another runtime's watchdog reports it
        if record is None and not self._is_first():
            return
        warn = self.warn_after is not None and elapsed >= self.warn_after
        reset = ours and self.reset_after is not None and elapsed >= self.reset_after
        if not (warn or reset):
            return
        what = _describe(record, sample.handler, sample.location)
        limit_name, limit = (
            ("blocking_reset_after", self.reset_after)
            if reset
            else ("blocking_warning_after", self.warn_after)
        )
        message = (
            f"the event loop was blocked for {elapsed:.3f} s by {what}; "
            f"the limit is {limit:.3f} s ({limit_name})"
        )
        if reset:
            assert record is not None
            logger.warning("%s; resetting the object", message)
            self.resets += 1
            _reset(self.registry, record, TimeoutError(message))
        else:
            logger.warning("%s", message)

    def _is_first(self) -> bool:
        try:
            watchdogs = _watchdogs.get()
        except LookupError:  # pragma: no cover - always set by open_watchdog
            return True
        return bool(watchdogs) and watchdogs[0] is self


# ------------------------------------------------------------------ helpers


def _outward(frame: FrameType | None) -> Iterator[FrameType]:
    while frame is not None:
        yield frame
        frame = frame.f_back


def _is_own(code: CodeType) -> bool:
    filename = code.co_filename
    return filename.startswith((_PACKAGE_DIR, _TRIO_DIR))


def _is_library(code: CodeType) -> bool:
    filename = code.co_filename
    if filename.startswith("<") or _is_own(code):
        return True
    path = os.path.abspath(filename)
    return path.startswith(_STDLIB_DIRS) and not path.startswith(_SITE_DIRS)


def _running_task(root: trio.lowlevel.Task | None) -> trio.lowlevel.Task | None:
    """The task whose coroutine is executing (read from the sampler thread).

    The loop thread is stuck inside one task step, so exactly one task's
    coroutine is running. The task tree may change under us if the loop
    moves on meanwhile; the caller then tries again at the next interval.
    """
    pending = [root] if root is not None else []
    while pending:
        task = pending.pop()
        if getattr(task.coro, "cr_running", False):
            return task
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return None


def _object_of(task: trio.lowlevel.Task | None) -> LiveObject | None:
    """The object whose code ``task`` runs: every dispatch into an object sets it."""
    if task is None:
        return None
    return task.context.get(CURRENT_OBJECT)


def _handler_name(frames: list[FrameType], record: LiveObject | None) -> str | None:
    """The first user frame inside the runtime's innermost call into user code.

    ``frames`` is innermost first. The runtime enters user code from its own
    frames (an event's dispatch, background work, the constructor); the
    innermost of our frames that has a user frame right inside it is that
    entry, and the user frame is the handler (its helpers are further in).
    """
    for index in range(1, len(frames)):
        outer, inner = frames[index], frames[index - 1]
        if _is_own(outer.f_code) and not _is_own(inner.f_code):
            code = inner.f_code
            if code.co_filename.startswith("<attrs generated") and record is not None:
                return f"{record.object_class.__qualname__} constructor"
            return code.co_qualname
    return None


def _location(frames: list[FrameType]) -> str | None:
    """Where the innermost user code was (file:line), libraries skipped."""
    for frame in frames:
        if not _is_library(frame.f_code):
            return f"{frame.f_code.co_filename}:{frame.f_lineno}"
    return None


def _describe(record: LiveObject | None, handler: str | None, location: str | None) -> str:
    if record is None:
        what = "code outside any object (no object)"
    else:
        oid = record.object_id
        label = repr(oid.name) if oid.name is not None else f"{oid.hex[:16]}…"
        what = f"object {oid.namespace}:{label}"
        what += f" in {handler}" if handler else " in an unidentified handler"
    if location:
        what += f" at {location}"
    return what


def _reset(registry: Registry, record: LiveObject, error: TimeoutError) -> None:
    try:
        if registry.lookup(*record.key) is record:
            record.reset(error, origin="watchdog")
    except Exception:  # run_sync_soon callbacks must not raise
        logger.exception("resetting %s after it blocked the loop failed", record.object_id)


@contextmanager
def open_watchdog(
    registry: Registry, *, warn_after: float | None, reset_after: float | None
) -> Iterator[Watchdog | None]:
    """Install a :class:`Watchdog` for ``registry`` while the block runs.

    Yields ``None`` (and installs nothing) when both limits are ``None``.
    Must be entered inside ``trio.run``.
    """
    if warn_after is None and reset_after is None:
        yield None
        return
    watchdog = Watchdog(registry, warn_after=warn_after, reset_after=reset_after)
    try:
        watchdogs = _watchdogs.get()
    except LookupError:
        watchdogs = []
        _watchdogs.set(watchdogs)
    watchdogs.append(watchdog)
    watchdog.start()
    try:
        yield watchdog
    finally:
        watchdog.stop()
        watchdogs.remove(watchdog)
