"""The watchdog: notices object code that blocks the event loop.

Every object of a runtime shares one Trio event loop, so a handler that
blocks it (``time.sleep``, a synchronous HTTP call, a long computation)
stalls every other object and every connection. The watchdog cannot prevent
that, but it makes it visible and contains it:

* A :class:`trio.abc.Instrument` times every *task step* (the code a task
  runs between two checkpoints) with the real clock
  (``time.perf_counter``: the point is wall time lost by everybody, which
  Trio's clock, possibly a ``MockClock``, does not see).
* A small *sampler thread* looks at the loop while a step is still running.
  Handlers run in their caller's task, so when a handler blocks before its
  first checkpoint and returns within the same step, nothing at the end of
  the step still says which object ran. While the step runs, the task's
  context (``task.context``, where the registry's ``_current_object``
  variable is set for the duration of each event) names the object, and the
  loop thread's Python frames name the handler and the line.
* When the step ends and it took ``warn_after`` seconds or more, a warning
  names the object, the handler and the line. At ``reset_after`` seconds or
  more the object is also reset (as a failed ``block_concurrency_while``
  would reset it): its callers in flight get ``ObjectResetError`` and the
  next event builds a fresh instance. Other objects are untouched.
* If a step is still running ten times ``warn_after`` later (an endless
  loop, a deadlock on a thread lock), the sampler thread logs that too, once,
  while the loop is still stuck.

Blocking outside any object (the worker function, a test body) is logged as
well, by the first watchdog of the Trio run, and resets nothing.

Time spent in the cyclic garbage collector during a step is not counted:
a full collection over a large heap can pause the loop for most of a
second in whatever task happens to allocate, and that is not its fault.

Costs: two short Python calls per task step (about 1-2 µs on a 2-core VM),
and a thread that wakes every ``warn_after / 4`` seconds (at most every
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

from ._registry import LiveObject, Registry, _current_object

__all__ = [
    "DEFAULT_BLOCKING_RESET_AFTER",
    "DEFAULT_BLOCKING_WARNING_AFTER",
    "Watchdog",
    "open_watchdog",
]

logger: Final = logging.getLogger("trio_durable")

#: Seconds a task step may block the loop before a warning is logged.
DEFAULT_BLOCKING_WARNING_AFTER: Final = 1.0
#: Seconds a task step may block the loop before its object is reset (the
#: default CPU-time limit of a Cloudflare Worker invocation).
DEFAULT_BLOCKING_RESET_AFTER: Final = 30.0

# The sampler thread wakes this often (a fraction of the threshold, bounded).
_MIN_INTERVAL: Final = 0.002
_MAX_INTERVAL: Final = 0.25
# "Still blocked" is logged when a step runs this many times the threshold.
_STILL_BLOCKED_FACTOR: Final = 10

# Where the registry enters object code: the frame just inside one of these
# (after trio_durable's own frames) is "the handler".
_DISPATCH_CODES: Final = frozenset(
    {
        LiveObject.run_event.__code__,
        LiveObject._run_background.__code__,
        Registry.construct.__code__,
    }
)
_PACKAGE_DIR: Final = os.path.dirname(os.path.abspath(__file__)) + os.sep
_TRIO_DIR: Final = os.path.dirname(os.path.abspath(trio.__file__)) + os.sep
_STDLIB_DIRS: Final = tuple(
    {os.path.abspath(sysconfig.get_paths()[name]) + os.sep for name in ("stdlib", "platstdlib")}
)
_SITE_DIRS: Final = tuple(
    {os.path.abspath(sysconfig.get_paths()[name]) + os.sep for name in ("purelib", "platlib")}
)

_now: Final = time.perf_counter

# The (task, start, GC seconds at start) record of the step running now; a
# new tuple per step.
_Step = tuple[trio.lowlevel.Task, float, float]


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
    """What the sampler thread saw while a long step was running."""

    step: _Step
    record: LiveObject | None
    handler: str | None
    location: str | None


class Watchdog(trio.abc.Instrument):
    """Times task steps; warns about (and resets) objects that block the loop.

    Made by :func:`open_watchdog`; one per runtime.

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
        self._interval = min(max(self._threshold / 4, _MIN_INTERVAL), _MAX_INTERVAL)
        self._step: _Step | None = None
        self._sample: _Sample | None = None
        self._token = trio.lowlevel.current_trio_token()
        self._loop_thread = threading.get_ident()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Steps that blocked the loop for ``warn_after`` seconds or more.
        self.blocked_steps = 0
        #: Objects reset because a step of theirs blocked past ``reset_after``.
        self.resets = 0

    # ------------------------------------------------------------ instrument

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        """(Trio) a task is about to run one step."""
        self._step = (task, _now(), _gc_clock.total)

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        """(Trio) the step ended: act if it took too long."""
        step = self._step
        self._step = None
        if step is not None:
            elapsed = _now() - step[1] - (_gc_clock.total - step[2])
            if elapsed >= self._threshold:
                try:
                    self._blocked(step, elapsed)
                except Exception:  # never let Trio disable the instrument
                    logger.exception("the blocking watchdog failed")

    # ------------------------------------------------------------- reporting

    def _blocked(self, step: _Step, elapsed: float) -> None:
        sample = self._sample
        if sample is not None and sample.step is step:
            record, handler, location = sample.record, sample.handler, sample.location
        else:  # the sampler did not get to run: say what the task shows now
            record = step[0].context.get(_current_object)
            handler, location = None, None
        self._sample = None
        ours = record is not None and record.registry is self.registry
        if record is not None and not ours:
            return  # another runtime's watchdog reports it
        if record is None and not self._is_first():
            return
        warn = self.warn_after is not None and elapsed >= self.warn_after
        reset = ours and self.reset_after is not None and elapsed >= self.reset_after
        if not (warn or reset):
            return
        self.blocked_steps += 1
        what = _describe(step[0], record, handler, location)
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
            error = TimeoutError(message)
            # Reset from a task, not from inside the run loop's bookkeeping.
            self._token.run_sync_soon(_reset, self.registry, record, error)
        else:
            logger.warning("%s", message)

    def _is_first(self) -> bool:
        try:
            watchdogs = _watchdogs.get()
        except LookupError:  # pragma: no cover - always set by open_watchdog
            return True
        return bool(watchdogs) and watchdogs[0] is self

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
        reported: _Step | None = None
        still_after = self._threshold * _STILL_BLOCKED_FACTOR
        while not self._stop.wait(self._interval):
            step = self._step
            if step is None:
                continue
            age = time.perf_counter() - step[1] - (_gc_clock.total - step[2])
            if age < self._interval:
                continue
            try:
                sample = self._take_sample(step)
            except Exception:  # a frame vanished under us: try again next time
                continue
            self._sample = sample
            if age >= still_after and reported is not step:
                reported = step
                logger.warning(
                    "the event loop is still blocked after %.1f s, by %s",
                    age,
                    _describe(step[0], sample.record, sample.handler, sample.location),
                )

    def _take_sample(self, step: _Step) -> _Sample:
        record = step[0].context.get(_current_object)
        frame = sys._current_frames().get(self._loop_thread)
        if frame is None or self._step is not step:
            return _Sample(step, record, None, None)
        frames = list(_outward(frame))  # innermost first
        return _Sample(step, record, _handler_name(frames, record), _location(frames))


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


def _handler_name(frames: list[FrameType], record: LiveObject | None) -> str | None:
    """The first frame of user code inside the innermost dispatch into an object."""
    for index, frame in enumerate(frames):
        if frame.f_code in _DISPATCH_CODES:
            inner = frames[:index]
            break
    else:
        return None
    # Outermost first: skip the runtime's own wrappers (the "handler" closures).
    for frame in reversed(inner):
        code = frame.f_code
        if _is_own(code):
            continue
        if code.co_filename.startswith("<attrs generated") and record is not None:
            return f"{record.namespace.object_class.__qualname__} constructor"
        return code.co_qualname
    return None


def _location(frames: list[FrameType]) -> str | None:
    """Where the innermost user code was (file:line), libraries skipped."""
    for frame in frames:
        if not _is_library(frame.f_code):
            return f"{frame.f_code.co_filename}:{frame.f_lineno}"
    return None


def _describe(
    task: trio.lowlevel.Task,
    record: LiveObject | None,
    handler: str | None,
    location: str | None,
) -> str:
    if record is None:
        what = f"task {task.name!r} (no object)"
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
    trio.lowlevel.add_instrument(watchdog)
    try:
        yield watchdog
    finally:
        with suppress(KeyError):  # Trio drops an instrument whose hook raised
            trio.lowlevel.remove_instrument(watchdog)
        watchdog.stop()
        watchdogs.remove(watchdog)
