"""Tests of the shared waiter for parked (hibernated) sockets.

Every behaviour runs against the epoll waiter and the task-per-fd fallback,
with real ``socket.socketpair()``s. Ordering uses
``trio.testing.wait_all_tasks_blocked``: local socket writes are visible to
epoll at once, so when all tasks are blocked a due callback has fired.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import sys
from collections.abc import Callable, Iterator

import pytest
import trio
import trio.testing

from trio_durable._websocket._parking import SocketParking

# Trio waits on socket handles, not fds, on Windows.
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX system")

MODES = [
    pytest.param(
        True, id="epoll", marks=pytest.mark.skipif(not hasattr(select, "epoll"), reason="no epoll")
    ),
    pytest.param(False, id="fallback"),
]


class Pairs:
    """Socket pairs closed at the end of the test: ``server`` is parked, ``client`` writes."""

    def __init__(self) -> None:
        self._all: list[socket.socket] = []

    def new(self) -> tuple[socket.socket, socket.socket]:
        server, client = socket.socketpair()
        server.setblocking(False)
        self._all += [server, client]
        return server, client

    def close(self) -> None:
        for sock in self._all:
            sock.close()


@pytest.fixture
def pairs() -> Iterator[Pairs]:
    p = Pairs()
    yield p
    p.close()


@pytest.fixture(params=MODES)
async def parking(request: pytest.FixtureRequest, nursery: trio.Nursery) -> SocketParking:
    p = SocketParking(use_epoll=request.param)
    await nursery.start(p.run)
    return p


class Recorder:
    """Callbacks that record which fd fired, in order."""

    def __init__(self) -> None:
        self.fired: list[int] = []

    def for_fd(self, fd: int) -> Callable[[], None]:
        def callback() -> None:
            self.fired.append(fd)

        return callback


def count_tasks() -> int:
    def walk(task: trio.lowlevel.Task) -> int:
        return 1 + sum(walk(child) for n in task.child_nurseries for child in n.child_tasks)

    root = trio.lowlevel.current_root_task()
    assert root is not None
    return walk(root)


def open_fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


# --- behaviours, both modes ----------------------------------------------------


async def test_fires_when_bytes_arrive_not_before(parking: SocketParking, pairs: Pairs) -> None:
    rec = Recorder()
    server, client = pairs.new()
    parking.park(server.fileno(), rec.for_fd(server.fileno()))
    await trio.testing.wait_all_tasks_blocked()
    assert rec.fired == [], "nothing was sent, so nothing may fire"
    client.send(b"x")
    await trio.testing.wait_all_tasks_blocked()
    assert rec.fired == [server.fileno()], "one byte arrived; the callback fires once"
    assert len(parking) == 0, "a fired fd is no longer parked"


async def test_fires_on_peer_close(parking: SocketParking, pairs: Pairs) -> None:
    rec = Recorder()
    server, client = pairs.new()
    parking.park(server.fileno(), rec.for_fd(server.fileno()))
    client.close()
    await trio.testing.wait_all_tasks_blocked()
    assert rec.fired == [server.fileno()], "EOF from the peer must wake the owner"


async def test_fires_on_peer_half_close(parking: SocketParking, pairs: Pairs) -> None:
    rec = Recorder()
    server, client = pairs.new()
    parking.park(server.fileno(), rec.for_fd(server.fileno()))
    client.shutdown(socket.SHUT_WR)
    await trio.testing.wait_all_tasks_blocked()
    assert rec.fired == [server.fileno()], "a half-close (RDHUP) must wake the owner"


async def test_one_shot_until_parked_again(parking: SocketParking, pairs: Pairs) -> None:
    rec = Recorder()
    server, client = pairs.new()
    fd = server.fileno()
    parking.park(fd, rec.for_fd(fd))
    client.send(b"a")
    await trio.testing.wait_all_tasks_blocked()
    client.send(b"b")
    await trio.testing.wait_all_tasks_blocked()
    assert rec.fired == [fd], "an unread, still-readable fd must not fire twice"
    parking.park(fd, rec.for_fd(fd))
    await trio.testing.wait_all_tasks_blocked()
    assert rec.fired == [fd, fd], "parking a readable fd again fires it again"


async def test_park_twice_is_an_error(parking: SocketParking, pairs: Pairs) -> None:
    server, _ = pairs.new()
    parking.park(server.fileno(), lambda: None)
    with pytest.raises(ValueError, match=f"fd {server.fileno()} is already parked"):
        parking.park(server.fileno(), lambda: None)


async def test_unpark_prevents_callback(parking: SocketParking, pairs: Pairs) -> None:
    rec = Recorder()
    server, client = pairs.new()
    parking.park(server.fileno(), rec.for_fd(server.fileno()))
    parking.unpark(server.fileno())
    parking.unpark(server.fileno())  # idempotent
    client.send(b"x")
    await trio.testing.wait_all_tasks_blocked()
    assert rec.fired == [], "an unparked fd must not call back"
    assert len(parking) == 0


async def test_unpark_after_readiness_but_before_the_waiter_runs(
    parking: SocketParking, pairs: Pairs
) -> None:
    rec = Recorder()
    server, client = pairs.new()
    parking.park(server.fileno(), rec.for_fd(server.fileno()))
    client.send(b"x")
    parking.unpark(server.fileno())  # no checkpoint in between
    await trio.testing.wait_all_tasks_blocked()
    assert rec.fired == [], "an event pending at unpark time must be dropped"


async def test_unpark_then_park_again_fires_the_new_callback(
    parking: SocketParking, pairs: Pairs
) -> None:
    fired: list[str] = []
    server, client = pairs.new()
    parking.park(server.fileno(), lambda: fired.append("old"))
    await trio.testing.wait_all_tasks_blocked()
    parking.unpark(server.fileno())
    parking.park(server.fileno(), lambda: fired.append("new"))
    client.send(b"x")
    await trio.testing.wait_all_tasks_blocked()
    assert fired == ["new"]


async def test_many_parked_only_the_written_ones_fire(parking: SocketParking, pairs: Pairs) -> None:
    rec = Recorder()
    socks = [pairs.new() for _ in range(1000)]
    for server, _ in socks:
        parking.park(server.fileno(), rec.for_fd(server.fileno()))
    await trio.testing.wait_all_tasks_blocked()
    assert len(parking) == 1000
    chosen = socks[::100]
    for _, client in chosen:
        client.send(b"x")
    await trio.testing.wait_all_tasks_blocked()
    assert sorted(rec.fired) == sorted(s.fileno() for s, _ in chosen), "exactly the 10 written"
    assert len(parking) == 990


async def test_callback_exception_is_logged_and_waiter_survives(
    parking: SocketParking, pairs: Pairs, caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder()
    bad, bad_client = pairs.new()
    good, good_client = pairs.new()

    def broken() -> None:
        raise RuntimeError("boom")

    parking.park(bad.fileno(), broken)
    parking.park(good.fileno(), rec.for_fd(good.fileno()))
    with caplog.at_level(logging.ERROR, logger="trio_durable.websocket"):
        bad_client.send(b"x")
        await trio.testing.wait_all_tasks_blocked()
        good_client.send(b"x")
        await trio.testing.wait_all_tasks_blocked()
    assert rec.fired == [good.fileno()], "the waiter must keep serving other fds"
    records = [r for r in caplog.records if r.name == "trio_durable.websocket"]
    assert len(records) == 1, records
    assert f"fd {bad.fileno()}" in records[0].getMessage()
    assert records[0].exc_info is not None
    assert isinstance(records[0].exc_info[1], RuntimeError)


@pytest.mark.parametrize("use_epoll", MODES)
async def test_fds_parked_before_run_fire_once_running(use_epoll: bool, pairs: Pairs) -> None:
    rec = Recorder()
    parking = SocketParking(use_epoll=use_epoll)
    server, client = pairs.new()
    parking.park(server.fileno(), rec.for_fd(server.fileno()))
    client.send(b"x")
    async with trio.open_nursery() as nursery:
        await nursery.start(parking.run)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert rec.fired == [server.fileno()]


@pytest.mark.parametrize("use_epoll", MODES)
async def test_cancelled_run_refuses_new_fds_and_forgets_old(use_epoll: bool, pairs: Pairs) -> None:
    parking = SocketParking(use_epoll=use_epoll)
    server, _ = pairs.new()
    async with trio.open_nursery() as nursery:
        await nursery.start(parking.run)
        parking.park(server.fileno(), lambda: None)
        nursery.cancel_scope.cancel()
    assert len(parking) == 0
    with pytest.raises(trio.ClosedResourceError):
        parking.park(server.fileno(), lambda: None)
    with pytest.raises(RuntimeError, match="only once"):
        await parking.run()


# --- the cost model ------------------------------------------------------------


@pytest.mark.skipif(not hasattr(select, "epoll"), reason="no epoll")
async def test_epoll_mode_uses_one_task_for_all_fds(nursery: trio.Nursery, pairs: Pairs) -> None:
    parking = SocketParking(use_epoll=True)
    await nursery.start(parking.run)
    await trio.testing.wait_all_tasks_blocked()
    before = count_tasks()
    for _ in range(1000):
        server, _ = pairs.new()
        parking.park(server.fileno(), lambda: None)
    await trio.testing.wait_all_tasks_blocked()
    assert count_tasks() == before, "parking must not start tasks"


async def test_fallback_mode_uses_one_task_per_fd(nursery: trio.Nursery, pairs: Pairs) -> None:
    parking = SocketParking(use_epoll=False)
    await nursery.start(parking.run)
    await trio.testing.wait_all_tasks_blocked()
    before = count_tasks()
    for _ in range(10):
        server, _ = pairs.new()
        parking.park(server.fileno(), lambda: None)
    await trio.testing.wait_all_tasks_blocked()
    assert count_tasks() == before + 10, "the fallback is correct, not cheap"


@pytest.mark.skipif(not hasattr(select, "epoll"), reason="no epoll")
@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
async def test_cancelling_run_closes_the_epoll_fd() -> None:
    baseline = open_fd_count()
    parking = SocketParking(use_epoll=True)
    assert parking.uses_epoll
    assert open_fd_count() == baseline + 1, "the epoll object holds one fd"
    with trio.move_on_after(0) as scope:
        await parking.run()
    assert scope.cancelled_caught
    assert open_fd_count() == baseline, "run() must close its epoll fd on exit"


def test_forcing_epoll_where_missing_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(select, "epoll", raising=False)
    with pytest.raises(RuntimeError, match="select.epoll is not available"):
        SocketParking(use_epoll=True)
    assert not SocketParking().uses_epoll, "the default falls back when epoll is missing"
