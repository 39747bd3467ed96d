"""Input and output gates: the two rules that make an object's events safe.

Input gate
    Every event (RPC, fetch, WebSocket event, alarm) *passes* the gate before
    its handler starts, in arrival order. Handlers do not hold the gate while
    they run, so they interleave at awaits on outside I/O. A storage call or
    ``block_concurrency_while`` *holds* the gate: while it is held, no event
    starts and no handler returning from runtime-mediated I/O resumes.

    Trio may run ready tasks in any order (it reverses its run batch at
    random), so "arrival order" cannot rest on wake-up order. Waiters queue
    in a deque and only the first is woken; once it has had its turn it
    wakes the next itself, after it has become the running task.

    A handler that goes on from one storage call into the next without
    awaiting anything else keeps the gate: ``v = await get(k); await put(k,
    v + 1)`` is atomic, as in Durable Objects (events wait while the
    object's code runs). A woken waiter checks that the gate is still free
    once it runs, and waits again if that handler took it back.

    The holder may re-enter (a storage call inside ``block_concurrency_while``,
    or a call chain that starts there and comes back to the same object);
    anything else waits.

Output gate
    A message that leaves the object after a storage write must wait until
    that write is committed. Storage registers one :class:`PendingCommit`
    per batch of writes with :meth:`OutputGate.hold` (an object's batches
    commit in order, so the gate keeps only the latest); senders ``await
    gate.wait()`` which returns once every commit registered *before* the
    wait began has finished, or raises :class:`~trio_durable.ObjectResetError`
    when one of them failed (the object is reset and the message is dropped).
    A waiter tells the commit that someone waits (``PendingCommit.on_wait``):
    storage then commits the batch without waiting for the input gate.

    Whoever runs an event can also learn whether *its* writes were lost:
    while :data:`EVENT_COMMITS` holds a list, storage reports every write
    with :func:`note_write`, and the commits it names are the event's;
    :func:`lost_writes` then says whether one failed. (The socket hub uses it
    to close, with 1011, the socket whose message's writes a failed commit
    dropped, and no other.)
"""

from __future__ import annotations

import contextvars
from collections import deque
from collections.abc import Callable
from typing import Final

import trio

from .._exceptions import ObjectResetError

__all__ = [
    "EVENT_COMMITS",
    "InputGate",
    "OutputGate",
    "PendingCommit",
    "lost_writes",
    "note_write",
]


_ACTIVATING = object()


class _Waiter:
    """One task waiting for its turn at the gate."""

    __slots__ = ("event", "task", "wants_hold")

    def __init__(self, task: trio.lowlevel.Task, wants_hold: bool) -> None:
        self.event = trio.Event()
        self.task = task
        self.wants_hold = wants_hold


class InputGate:
    """FIFO gate that events pass through and that storage/``bcw`` can hold."""

    __slots__ = ("_depth", "_holder", "_waiters", "on_open")

    def __init__(self) -> None:
        #: Called once (then cleared) when the gate is next released by its
        #: holder: storage commits a batch as soon as its object's gate opens.
        self.on_open: Callable[[], None] | None = None
        # A task, or _ACTIVATING while the object is not built yet.
        self._holder: object | None = None
        self._depth = 0
        # Created on first contention: most gates never queue anyone. The
        # first waiter stays in the queue until it has had its turn.
        self._waiters: deque[_Waiter] | None = None

    @property
    def is_held(self) -> bool:
        """True while a storage call or ``block_concurrency_while`` holds the gate."""
        return self._holder is not None

    def _wake_first(self) -> None:
        # Only a wake-up: the first waiter checks, once it runs, that the gate
        # is still free. The task that just released it may have gone on,
        # without yielding, into another storage call, and taken it again:
        # ``v = await get(k); await put(k, v + 1)`` must not let an event in
        # between (as in Durable Objects, where events wait while the
        # object's code runs).
        waiters = self._waiters
        if self._holder is None and waiters:
            waiters[0].event.set()

    def _opened(self) -> None:
        callback = self.on_open
        if callback is not None:
            self.on_open = None
            callback()

    async def _wait_turn(self, wants_hold: bool) -> None:
        task = trio.lowlevel.current_task()
        waiter = _Waiter(task, wants_hold)
        if self._waiters is None:
            self._waiters = deque()
        waiters = self._waiters
        waiters.append(waiter)
        if self._holder is None and waiters[0] is waiter:
            waiter.event.set()  # free and nobody ahead: go at the next schedule point
        try:
            while True:
                await waiter.event.wait()
                if self._holder is None and waiters[0] is waiter:
                    break
                waiter.event = trio.Event()  # someone took it first: wait again
        except BaseException:
            first = waiters[0] is waiter
            waiters.remove(waiter)
            if first:
                self._wake_first()  # pass our turn on, so the queue does not stall
            raise
        waiters.popleft()
        if wants_hold:
            self._holder = task
            self._depth = 1
        else:
            self._wake_first()

    async def pass_through(self) -> None:
        """Wait for this event's turn, then let it start.

        Returns at once, without a checkpoint, when the gate is free and
        nobody waits: the common case costs nothing. Cancellation while
        waiting leaves the queue intact.
        """
        holder = self._holder
        if holder is None:
            if not self._waiters:
                return
        elif holder is trio.lowlevel.current_task():
            return
        await self._wait_turn(wants_hold=False)

    def try_hold(self) -> bool:
        """Hold the gate without waiting when that is possible (re-entrant).

        A free gate is taken even when events wait for it: they are events
        not started yet, and a handler already running goes on with its
        storage calls first.
        """
        task = trio.lowlevel.current_task()
        holder = self._holder
        if holder is task:
            self._depth += 1
            return True
        if holder is None:
            self._holder = task
            self._depth = 1
            return True
        return False

    async def acquire(self) -> None:
        """Hold the gate, waiting in line behind earlier events if needed."""
        if not self.try_hold():
            await self._wait_turn(wants_hold=True)

    def release(self) -> None:
        """Undo one :meth:`acquire`/:meth:`try_hold` by the holder."""
        if self._holder is None:
            return  # force_open() dropped the hold when the object was reset
        if self._holder is not trio.lowlevel.current_task():
            raise RuntimeError("the input gate is released by a task that does not hold it")
        self._depth -= 1
        if self._depth == 0:
            self._holder = None
            self._wake_first()
            self._opened()

    def close_for_activation(self) -> None:
        """Shut the gate until :meth:`open_after_activation`: events queue in order."""
        self._holder = _ACTIVATING
        self._depth = 1

    def open_after_activation(self) -> None:
        """Let queued events in, in arrival order, once the instance exists."""
        if self._holder is _ACTIVATING:
            self._holder = None
            self._depth = 0
            self._wake_first()
            self._opened()

    def force_open(self) -> None:
        """Drop any holder (used when the object is reset): waiters go on."""
        self._holder = None
        self._depth = 0
        self._wake_first()
        self._opened()


class PendingCommit:
    """One batch's commit, which the output gate waits for; storage resolves it exactly once.

    Waiters are woken directly (``trio.lowlevel.reschedule``), with no
    ``trio.Event`` per commit.

    Args:
        on_wait: Called once, when the first waiter arrives (storage commits
            a batch that someone waits for without waiting for its gate).
    """

    __slots__ = ("_on_wait", "_waiters", "error", "is_done", "waited")

    def __init__(self, on_wait: Callable[[], None] | None = None) -> None:
        self._on_wait = on_wait
        self._waiters: list[trio.lowlevel.Task] | None = None
        #: True once resolved.
        self.is_done = False
        #: The failure, when the commit failed.
        self.error: BaseException | None = None
        #: True once someone waited for it.
        self.waited = False

    def resolve(self, error: BaseException | None = None) -> None:
        """Mark the commit finished, successfully when ``error`` is ``None``; wake the waiters."""
        if self.is_done:
            return
        self.error = error
        self.is_done = True
        waiters = self._waiters
        if waiters:
            self._waiters = None
            reschedule = trio.lowlevel.reschedule
            for task in waiters:
                reschedule(task)

    async def wait(self) -> None:
        """Wait until resolved (a checkpoint either way)."""
        if self.is_done:
            await trio.lowlevel.checkpoint()
            return
        if not self.waited:
            self.waited = True
            if self._on_wait is not None:
                self._on_wait()
        task = trio.lowlevel.current_task()
        if self._waiters is None:
            self._waiters = [task]
        else:
            self._waiters.append(task)

        def abort(_: object) -> trio.lowlevel.Abort:
            if self._waiters is not None:
                self._waiters.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)


class OutputGate:
    """Holds outgoing messages until the writes made before them are committed."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        # The latest batch's commit: an object's batches commit in order (a
        # failed one fails the later ones too), so waiting for the latest is
        # waiting for all.
        self._pending: PendingCommit | None = None

    def hold(self, commit: PendingCommit) -> None:
        """Register the commit of a new batch; storage calls ``resolve()`` on it when done."""
        pending = self._pending
        if pending is not None and pending.error is not None:
            return  # failed: the object is being reset, every later message is dropped
        self._pending = commit

    @property
    def is_open(self) -> bool:
        """True when nothing is waiting to be committed."""
        pending = self._pending
        return pending is None or (pending.is_done and pending.error is None)

    async def wait(self) -> None:
        """Wait for every commit registered before this call.

        Returns without a checkpoint when nothing is pending.

        Raises:
            ObjectResetError: one of those commits failed; the message that was
                waiting must be dropped.
        """
        commit = self._pending
        if commit is None:
            return
        if not commit.is_done:
            await commit.wait()
        if commit.error is not None:
            # Failed commits stay: the object is being reset and every later
            # message must be dropped too.
            raise ObjectResetError(
                f"a storage commit failed ({commit.error!r}); "
                "the object was reset and the held message was dropped"
            ) from commit.error
        if self._pending is commit:
            self._pending = None


#: The commits the writes of the event running in this task wait for, while
#: whoever runs the event watches: it sets a fresh list, runs the event, resets
#: the variable and asks :func:`lost_writes`. ``None`` (nobody watches)
#: otherwise. Per task, as events are. (A bare variable rather than a context
#: manager: the socket hub sets it for every WebSocket message.)
EVENT_COMMITS: Final[contextvars.ContextVar[list[PendingCommit] | None]] = (
    contextvars.ContextVar("trio_durable_event_commits", default=None)
)


def note_write(commit: PendingCommit) -> None:
    """(Storage) the running event just made a write that ``commit`` will carry."""
    commits = EVENT_COMMITS.get()
    if commits is not None and (not commits or commits[-1] is not commit):
        commits.append(commit)


async def lost_writes(commits: list[PendingCommit]) -> bool:
    """Wait until ``commits`` (an event's) are over; True if any of them failed.

    Returns at once, without a checkpoint, when they are already over.
    """
    lost = False
    for commit in commits:
        if not commit.is_done:
            await commit.wait()
        lost = lost or commit.error is not None
    return lost
