"""A few long-lived delivery tasks that serve woken connections, instead of a task per wake.

When a parked socket becomes readable, the parking calls its connection
back, and the connection queues a :class:`~trio_durable._websocket._reader.Reader`
here. A *worker* takes it, reads what arrived, delivers the messages (the
handler runs in the worker's task, as calls run in their caller's) and, when
the connection is idle again, re-arms its socket in the parking at once: no
task was started, no cancel scope opened, the socket never joined Trio's own
epoll set. Only a connection that stays busy (a read that filled the buffer,
half a frame, a close handshake under way) gets a reader task of its own,
which parks it once it has been quiet for ``park_after`` seconds.

Workers take queued connections in order. A handler may wait (on a commit,
another object, the network): a worker about to serve a connection makes
sure another worker is on its way while more connections wait, so one slow
handler never holds up the others. Idle workers wait without a task switch
being paid per wake-up; a few are kept, the rest end.

**Fairness.** A worker serves connections one after the other within one
turn (``_TURN`` seconds of real time, as a reader's), then yields; messages
spend the task's cooperative budget as they do in a reader.

The pool also keeps idle :class:`~trio_durable._websocket._frames.FrameCodec`
objects: most wake-ups need none (whole small frames take the codec-free
fast path), and one that does borrows an idle codec rather than building one.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from typing import TYPE_CHECKING, Final

import trio

from ._frames import FrameCodec

if TYPE_CHECKING:
    from ._reader import Reader

__all__ = ["DeliveryPool"]

#: Seconds (of real time) a worker may deliver before it lets others run.
TURN: Final = 50e-6
#: Idle workers kept waiting; more end once the queue is empty.
_KEEP_IDLE: Final = 4
#: Idle codecs kept for reuse.
_KEEP_CODECS: Final = 64


class DeliveryPool:
    """The delivery workers and idle codecs of one connection home.

    Args:
        nursery: Where workers run (the connection nursery).
        max_message_size: The message limit of the codecs handed out.
    """

    __slots__ = (
        "_codecs",
        "_coming",
        "_idle",
        "_max_message_size",
        "_nursery",
        "_queue",
        "workers",
    )

    def __init__(self, nursery: trio.Nursery, max_message_size: int) -> None:
        self._nursery = nursery
        self._max_message_size = max_message_size
        self._queue: deque[Reader] = deque()
        self._idle: list[trio.lowlevel.Task] = []
        # Workers woken or started that have not taken from the queue yet.
        self._coming = 0
        self._codecs: list[FrameCodec] = []
        #: Worker tasks alive (busy or idle).
        self.workers = 0

    def __len__(self) -> int:
        """Connections waiting for a worker."""
        return len(self._queue)

    # ---------------------------------------------------------------- codecs

    def take_codec(self) -> FrameCodec:
        """An idle codec, reused when one is free."""
        codecs = self._codecs
        if codecs:
            return codecs.pop()
        return FrameCodec(max_message_size=self._max_message_size)

    def give_codec(self, codec: FrameCodec) -> None:
        """Take back a codec; only an idle one is kept (it holds nothing then)."""
        if codec.is_idle and len(self._codecs) < _KEEP_CODECS:
            self._codecs.append(codec)

    # --------------------------------------------------------------- workers

    def submit(self, reader: Reader) -> None:
        """Serve ``reader`` in a worker, after the connections queued before it.

        Raises:
            RuntimeError: The connection nursery is closed (shutting down);
                nothing was queued.
        """
        if not self._coming:
            self._call_worker()
        self._queue.append(reader)

    def _call_worker(self) -> None:
        # Raises RuntimeError when the nursery is closed, before any change.
        if self._idle:
            trio.lowlevel.reschedule(self._idle.pop())
        else:
            self._nursery.start_soon(self._work)
            self.workers += 1
        self._coming += 1

    async def _work(self) -> None:
        queue = self._queue
        perf_counter = time.perf_counter
        task = trio.lowlevel.current_task()
        idle = self._idle

        def abort(_: object) -> trio.lowlevel.Abort:
            idle.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        try:
            while True:
                self._coming -= 1
                turn_end = perf_counter() + TURN
                while queue:
                    reader = queue.popleft()
                    if queue and not self._coming:
                        # The handler may wait: someone else takes the next one.
                        with contextlib.suppress(RuntimeError):  # shutting down
                            self._call_worker()
                    reader.turn_end = turn_end
                    await reader.visit()
                    turn_end = reader.turn_end
                    if perf_counter() >= turn_end:
                        await trio.lowlevel.checkpoint()
                        turn_end = perf_counter() + TURN
                if len(idle) >= _KEEP_IDLE:
                    return
                idle.append(task)
                await trio.lowlevel.wait_task_rescheduled(abort)
        finally:
            self.workers -= 1
