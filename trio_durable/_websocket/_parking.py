"""One shared waiter for the sockets of hibernated WebSocket connections.

A hibernated connection should cost almost nothing: no Trio task of its own,
no codec, no buffer. `SocketParking` watches all of them at once. On Linux it
owns one ``epoll`` object and a few long-lived *worker* tasks, one of which at
a time sleeps on the epoll fd with `trio.lowlevel.wait_readable`; when any
parked socket becomes readable (bytes, EOF or a half-close) that worker calls
the socket's callback, once, then serves the work the callbacks submitted
(`SocketParking.submit`) while another worker takes over the watch. The callback is
synchronous and should only hand the socket to a reader (the connections
submit the reader's visit to the workers, see `SocketParking.submit`), which
handles the frames and parks the socket again when it is idle: re-arming a socket that
woke is one ``epoll_ctl`` (``park(..., rearm=True)``).

Per parked socket we keep one dict entry (fd to callback) plus the kernel's
epoll entry, which Python's allocator does not see.

Where ``select.epoll`` is missing (macOS, Windows) the fallback runs one Trio
task per parked fd, each in `trio.lowlevel.wait_readable`. It behaves the same
but costs a task (a couple of KiB) per socket; ``use_epoll=False`` forces it,
which the tests do.

Rules for owners of parked fds:

* ``unpark(fd)`` before closing a parked fd: the kernel forgets a closed fd
  but our table would not, and a new socket with the same number could not
  be parked.
* A callback may be called for readiness that is gone by the time the reader
  looks (another reader consumed the data, or the fd was unparked and parked
  again within one batch); readers use non-blocking reads and re-park on
  ``BlockingIOError``.
"""

from __future__ import annotations

import contextlib
import logging
import select
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final

import trio

__all__ = ["SocketParking"]

logger: Final = logging.getLogger("trio_durable.websocket")

# Level-triggered readability, peer half-close, and one-shot: a socket wakes
# its owner once and stays quiet until parked again, so a client that keeps
# sending while its reader starts does not make the waiter spin.
_EPOLL_MASK: Final = (
    (select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLONESHOT) if hasattr(select, "epoll") else 0
)

DEFAULT_BATCH_SIZE: Final = 256
#: Seconds (of real time) a worker may serve connections before it lets others run.
TURN: Final = 50e-6
#: Idle workers kept waiting; more end.
_KEEP_IDLE: Final = 4


class SocketParking:
    """Watches parked sockets and calls a callback when one becomes readable.

    Create it, start `run` in a nursery (``await nursery.start(parking.run)``),
    then `park` and `unpark` file descriptors from any task of that Trio run.
    Fds may be parked before `run` starts; their callbacks fire once it runs.

    Args:
        use_epoll: ``True`` for the single-task epoll waiter, ``False`` for
            the task-per-fd fallback, ``None`` (default) to use epoll where
            ``select.epoll`` exists.
        batch_size: Most ready fds handled before yielding to other tasks;
            bounds how long one wake-up can hold the event loop.

    Raises:
        RuntimeError: ``use_epoll=True`` where ``select.epoll`` is missing.
    """

    __slots__ = (
        "_batch_size",
        "_callbacks",
        "_closed",
        "_coming",
        "_epoll",
        "_idle",
        "_nursery",
        "_queue",
        "_running",
        "_scopes",
        "_watching",
        "workers",
    )

    def __init__(
        self, *, use_epoll: bool | None = None, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> None:
        have_epoll = hasattr(select, "epoll")
        if use_epoll is None:
            use_epoll = have_epoll
        if use_epoll and not have_epoll:
            raise RuntimeError("select.epoll is not available on this platform")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, not {batch_size}")
        self._batch_size = batch_size
        # The whole per-fd state of a parked socket in epoll mode.
        self._callbacks: dict[int, Callable[[], None]] = {}
        # Created now so that fds can be parked before run() starts.
        self._epoll: select.epoll | None = select.epoll() if use_epoll else None
        # Fallback mode only: the cancel scope of each fd's watcher task.
        self._scopes: dict[int, trio.CancelScope] = {}
        self._nursery: trio.Nursery | None = None
        self._running = False
        self._closed = False
        # Epoll mode: work given to `submit`, the idle workers, how many
        # workers were called and have not run yet, and whether one of them
        # waits on the epoll fd.
        self._queue: deque[Callable[[], Awaitable[None]]] = deque()
        self._idle: list[trio.lowlevel.Task] = []
        self._coming = 0
        self._watching = False
        #: Worker tasks alive (epoll mode).
        self.workers = 0

    @property
    def uses_epoll(self) -> bool:
        """True for the single-task epoll waiter, False for the task-per-fd fallback."""
        return self._epoll is not None

    def __len__(self) -> int:
        """Return the number of parked fds."""
        return len(self._callbacks)

    def park(self, fd: int, callback: Callable[[], None], *, rearm: bool = False) -> None:
        """Call ``callback()`` once, from the waiter task, when ``fd`` becomes readable.

        Readable includes EOF and a peer's half-close. After the call the fd
        is no longer parked; park it again to be woken again.

        Args:
            fd: A socket's file descriptor. It stays owned by the caller.
            callback: Synchronous and quick; exceptions are logged, not raised.
            rearm: The fd was parked before and woke, without `unpark`
                since: its spent one-shot registration is re-armed with one
                ``epoll_ctl`` (a wrong guess costs one more, nothing else).

        Raises:
            ValueError: ``fd`` is already parked.
            trio.ClosedResourceError: `run` has finished.
        """
        if self._closed:
            raise trio.ClosedResourceError("the socket parking has stopped")
        if fd in self._callbacks:
            raise ValueError(f"fd {fd} is already parked")
        epoll = self._epoll
        if epoll is not None:
            # A one-shot registration stays in the kernel, disarmed, after it
            # fired; re-arming it is a modify.
            if rearm:
                try:
                    epoll.modify(fd, _EPOLL_MASK)
                except FileNotFoundError:
                    epoll.register(fd, _EPOLL_MASK)
            else:
                try:
                    epoll.register(fd, _EPOLL_MASK)
                except FileExistsError:
                    epoll.modify(fd, _EPOLL_MASK)
            self._callbacks[fd] = callback
            return
        self._callbacks[fd] = callback
        scope = trio.CancelScope()
        self._scopes[fd] = scope
        if self._nursery is not None:
            self._nursery.start_soon(self._watch_one, fd, scope)

    def unpark(self, fd: int) -> None:
        """Forget ``fd`` without calling its callback; does nothing if it is not parked.

        Args:
            fd: The file descriptor given to `park`.
        """
        if self._callbacks.pop(fd, None) is None:
            return
        if self._epoll is not None:
            # OSError: the fd was closed already and the kernel dropped it;
            # ValueError: the epoll object is closed. Nothing left to forget.
            with contextlib.suppress(OSError, ValueError):
                # Also drops a readiness event not yet collected by the waiter.
                self._epoll.unregister(fd)
        else:
            self._scopes.pop(fd).cancel()

    def submit(self, async_fn: Callable[[], Awaitable[None]]) -> None:
        """Run ``async_fn()`` in a worker task, after the work submitted before it.

        In epoll mode the same few workers take turns waiting on the epoll
        fd: the one that wakes calls the callbacks of the ready fds (which
        usually submit the connection's reader), calls another worker to
        watch meanwhile, and serves the queue itself, in the same scheduler
        pass as the wake-up. A worker about to start one piece of work while
        more waits calls another worker first, so work that waits (a
        handler on a commit) never holds up the rest. No task per wake-up.
        In fallback mode each call is a task of its own.

        Raises:
            RuntimeError: `run` has finished (the runtime is shutting down);
                nothing was queued.
        """
        if self._closed:
            raise RuntimeError("the socket parking has stopped")
        if self._epoll is None:
            if self._nursery is None:
                raise RuntimeError("the socket parking is not running")
            self._nursery.start_soon(async_fn)
            return
        self._queue.append(async_fn)
        if not self._coming and self._nursery is not None:
            self._call_worker()

    def _call_worker(self) -> None:
        if self._idle:
            trio.lowlevel.reschedule(self._idle.pop())
        else:
            assert self._nursery is not None
            self._nursery.start_soon(self._work)
            self.workers += 1
        self._coming += 1

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Wait for parked fds and call their callbacks until cancelled.

        Reports readiness with ``task_status.started()``. On exit (only by
        cancellation or a crash) it closes the epoll fd, forgets every parked
        fd and refuses new ones. It can run only once.

        Raises:
            RuntimeError: It is already running or has run.
        """
        if self._running or self._closed:
            raise RuntimeError("SocketParking.run() can be called only once")
        self._running = True
        try:
            if self._epoll is not None:
                await self._run_epoll(self._epoll, task_status)
            else:
                await self._run_fallback(task_status)
        finally:
            self._closed = True
            self._running = False
            self._callbacks.clear()
            self._scopes.clear()
            self._nursery = None
            if self._epoll is not None:
                trio.lowlevel.notify_closing(self._epoll.fileno())
                self._epoll.close()

    async def _run_epoll(self, epoll: select.epoll, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._call_worker()  # the first watcher (and any work submitted before run)
            task_status.started()
            await trio.sleep_forever()

    async def _work(self) -> None:
        """A worker: serve the queue; watch the epoll fd when nobody does; else idle."""
        epoll = self._epoll
        assert epoll is not None
        epoll_fd = epoll.fileno()
        callbacks = self._callbacks
        queue = self._queue
        idle = self._idle
        task = trio.lowlevel.current_task()
        perf_counter = time.perf_counter

        def abort(_: object) -> trio.lowlevel.Abort:
            idle.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        called = True  # woken or started by _call_worker, which counted us
        try:
            while True:
                if called:
                    self._coming -= 1
                    called = False
                turn_end = perf_counter() + TURN
                while queue:
                    async_fn = queue.popleft()
                    if queue and not self._coming:
                        self._call_worker()  # this one may wait: another takes the rest
                    await async_fn()
                    if perf_counter() >= turn_end:
                        await trio.lowlevel.checkpoint()
                        turn_end = perf_counter() + TURN
                if self._watching:
                    if len(idle) >= _KEEP_IDLE:
                        return
                    idle.append(task)
                    await trio.lowlevel.wait_task_rescheduled(abort)
                    called = True
                    continue
                self._watching = True
                try:
                    await trio.lowlevel.wait_readable(epoll_fd)
                finally:
                    self._watching = False
                # At most one batch per wake-up: if more fds are ready the
                # epoll fd stays readable for the next watcher.
                for fd, _events in epoll.poll(0, self._batch_size):
                    callback = callbacks.pop(fd, None)
                    if callback is not None:  # None: unparked after the poll
                        _call(fd, callback)
                # Someone watches while this worker serves what woke up (in
                # this same scheduler pass: no hop to another task).
                if not self._coming:
                    self._call_worker()
        finally:
            self.workers -= 1

    async def _run_fallback(self, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for fd, scope in list(self._scopes.items()):
                nursery.start_soon(self._watch_one, fd, scope)
            task_status.started()
            await trio.sleep_forever()

    async def _watch_one(self, fd: int, scope: trio.CancelScope) -> None:
        # An unusable fd wakes its owner, whose read will see why, rather
        # than crashing the waiters of all the other fds.
        unusable = contextlib.suppress(OSError, trio.BusyResourceError, trio.ClosedResourceError)
        with scope, unusable:
            await trio.lowlevel.wait_readable(fd)
        # The fd may have been unparked (scope cancelled) or unparked and
        # parked again (a newer scope) while this task was waking up.
        if scope.cancel_called or self._scopes.get(fd) is not scope:
            return
        del self._scopes[fd]
        _call(fd, self._callbacks.pop(fd))


def _call(fd: int, callback: Callable[[], None]) -> None:
    # A broken callback belongs to one connection; it must not stop the
    # waiter that serves all the others.
    try:
        callback()
    except Exception:
        logger.exception("callback for parked fd %d raised", fd)
