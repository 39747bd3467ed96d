"""What ``Runtime.statistics()`` returns: a frozen snapshot of the runtime's counters."""

from __future__ import annotations

import attrs

__all__ = ["RuntimeStatistics"]


@attrs.frozen
class RuntimeStatistics:
    """A snapshot of a runtime's counters (:meth:`Runtime.statistics`).

    Taking one wakes no object and costs no I/O. Counts ending in ``s``
    (``activations``, ``messages_received``...) only grow while the runtime
    is open; the others are the state right now.

    Attributes:
        live_objects: Activations currently in memory.
        activations: Instances built since the runtime opened.
        evictions: Instances dropped because they were idle (hibernation).
        resets: Instances dropped because of a failure or ``abort()``.
        events_dispatched: Events (calls, fetches, socket events, alarms) that
            reached a handler.
        hibernated_objects: Objects not in memory whose hibernatable
            WebSockets are open: the next message wakes them.
        hibernatable_websockets: Open hibernatable WebSockets, of every object.
        connections_awake: WebSocket connections served by ``serve()`` that
            have a reader (traffic in the last ``park_after`` seconds).
        connections_parked: Those parked: idle, holding no task.
        messages_received: Messages that arrived on hibernatable WebSockets.
        messages_sent: Messages sent on them (``ws.send`` and broadcasts).
        auto_responses: Auto-responses sent without waking an object.
        commits: Storage commits (each carries the writes of many objects).
        commit_seconds: Real seconds those commits took, in total (the
            average commit latency is ``commit_seconds / commits``).
        alarms_fired: Alarms started because they came due (retries included).
        alarm_lag_seconds: How late those alarms started, in total (seconds
            after their time, by the runtime's clock).
        storage_cache_bytes: Bytes the key-value caches of the live objects
            hold together now, as the budget counts them: each entry's key
            (UTF-8) and encoded value, plus 128 bytes for the entry itself
            (its dict slot and object headers, measured on CPython 3.11).
        storage_cache_budget_bytes: The most they may hold together
            (``open_runtime(storage_cache_bytes=...)``).
        storage_cache_evictions: Cached entries dropped to stay within that
            budget (least recently used first).
    """

    live_objects: int
    activations: int
    evictions: int
    resets: int
    events_dispatched: int
    hibernated_objects: int = 0
    hibernatable_websockets: int = 0
    connections_awake: int = 0
    connections_parked: int = 0
    messages_received: int = 0
    messages_sent: int = 0
    auto_responses: int = 0
    commits: int = 0
    commit_seconds: float = 0.0
    alarms_fired: int = 0
    alarm_lag_seconds: float = 0.0
    storage_cache_bytes: int = 0
    storage_cache_budget_bytes: int = 0
    storage_cache_evictions: int = 0
