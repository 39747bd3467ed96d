"""Helpers of the PostgreSQL tests."""

from __future__ import annotations

import psycopg
import trio

#: Seconds a test waits for PostgreSQL to reach a state before failing.
WAIT_TIMEOUT = 10.0


def _sessions_waiting_on_locks(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()
    return int(row[0]) if row is not None else 0


async def waiting_on_a_lock(url: str) -> None:
    """Return once some session of the database waits for a lock (no sleeping on a guess)."""
    with trio.fail_after(WAIT_TIMEOUT):
        while not await trio.to_thread.run_sync(_sessions_waiting_on_locks, url):
            await trio.sleep(0.01)
