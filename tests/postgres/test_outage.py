"""The database stopped and restarted under load: clear errors, nothing acknowledged lost.

Writers keep calling objects of a runtime on PostgreSQL while the server is
stopped (``pg_ctl stop -m fast``: every connection is cut) and started again.
Meanwhile callers get trio_durable's errors, never a driver's; once the
server is back the same runtime serves again without being restarted; and a
fresh runtime finds every write that was acknowledged.
"""

from __future__ import annotations

from collections import defaultdict

import pytest
import trio

import trio_durable as td
from trio_durable._storage._backend import ObjectWrite
from trio_durable._storage._postgres import PostgresBackend

from ..storage.objects import OBJECTS
from .server import PostgresServer

WRITERS = 12


def _storage_failure(error: BaseException) -> bool:
    """A StorageError, or a reset caused by one (a commit that failed)."""
    while error is not None:
        if isinstance(error, td.StorageError):
            return True
        if not isinstance(error, td.ObjectResetError):
            return False
        error = error.__cause__  # type: ignore[assignment]
    return False


async def _refusal(url: str) -> str:
    """Why a second runtime cannot open the database (empty if it could)."""
    try:
        async with td.open_runtime(OBJECTS, database=url):
            return ""
    except td.StorageError as exc:
        return str(exc)


@pytest.mark.slow
async def test_service_resumes_after_the_database_restarts_and_nothing_acked_is_lost(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    acked: dict[str, list[int]] = defaultdict(list)
    errors: list[BaseException] = []
    acked_after_restart = trio.Event()
    restarted = False

    async def writer(runtime: td.Runtime, name: str) -> None:
        stub = runtime.namespace("boxes").get_by_name(name)
        i = 0
        while True:
            try:
                await stub.put(f"k{i:05}", i)
            except Exception as exc:  # what a caller sees during the outage
                errors.append(exc)
                await trio.sleep(0.05)
                continue
            acked[name].append(i)
            if restarted:
                acked_after_restart.set()
            i += 1

    backend = PostgresBackend(postgres_url, timeout=2.0)
    try:
        async with (
            td.open_runtime(OBJECTS, backend=backend) as runtime,
            trio.open_nursery() as nursery,
        ):
            for n in range(WRITERS):
                nursery.start_soon(writer, runtime, f"w{n}")
            with trio.fail_after(20):
                while sum(map(len, acked.values())) < 200:
                    await trio.sleep(0.01)
            await trio.to_thread.run_sync(postgres_server.stop)
            acked_before_stop = sum(map(len, acked.values()))
            with trio.fail_after(30):
                while len(errors) < WRITERS:  # every writer has hit the outage
                    await trio.sleep(0.05)
            await trio.to_thread.run_sync(postgres_server.start)
            restarted = True
            with trio.fail_after(30):
                await acked_after_restart.wait()
            # Its owner lock went with the old connections; the first commit
            # after the restart took it again, so a second runtime is refused.
            refusal = await _refusal(postgres_url)
            nursery.cancel_scope.cancel()
    finally:
        if not postgres_server.running:
            postgres_server.start()
    assert acked_before_stop > 0
    assert "in use by a single runtime" in refusal, (
        "the runtime holds the database again: a second one cannot open it"
    )
    raw = [exc for exc in errors if not _storage_failure(exc)]
    assert raw == [], "during the outage callers saw StorageError (or a reset it caused), only"
    async with td.open_runtime(OBJECTS, database=postgres_url) as fresh:
        missing = []
        for name, done in acked.items():
            stub = fresh.namespace("boxes").get_by_name(name)
            for i in done:
                if await stub.get(f"k{i:05}") != i:
                    missing.append((name, i))
    assert missing == [], "every acknowledged write survived the outage"


def _write(n: int) -> ObjectWrite:
    return ObjectWrite("boxes", "ab" * 32, None, puts={f"k{n}": b"1"})


@pytest.mark.slow
async def test_commits_succeed_soon_after_the_database_is_back(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    backend = PostgresBackend(postgres_url, timeout=1.0, in_thread=True)
    await backend.open()
    try:
        await backend.commit([_write(0)])
        await trio.to_thread.run_sync(postgres_server.stop)
        # Long enough for the pool's reconnection attempts to back off (1, 2, 4 s...).
        outage_ends = trio.current_time() + 8
        n = 1
        while trio.current_time() < outage_ends:
            with pytest.raises(td.StorageError):
                await backend.commit([_write(n)])
            n += 1
            await trio.sleep(0.05)
        await trio.to_thread.run_sync(postgres_server.start)
        back = trio.current_time()
        failures = 0
        while True:
            try:
                await backend.commit([_write(n)])
                break
            except td.StorageError:
                failures += 1
                await trio.sleep(0.05)
        recovered = trio.current_time() - back
    finally:
        if not postgres_server.running:
            postgres_server.start()
        await backend.aclose()
    # A probe connects every RECOVERY_PROBE_SECONDS; the pool alone would wait
    # out its backoff (up to 8 s here) before trying again.
    assert recovered < 2.5, f"the first commit succeeded {recovered:.1f} s after the restart"
