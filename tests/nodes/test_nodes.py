"""Three nodes on one PostgreSQL: real ``serve --database`` processes on 127.0.0.1.

Each node is a supervisor and its worker, in a session of its own, so a
test can ``kill -9`` or ``SIGSTOP`` a whole node as a machine dies or
freezes. Leases last 2 s here.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.cluster.workers import ROOT, Cluster, get, node
from tests.postgres.server import PostgresServer

pytestmark = pytest.mark.slow

LEASE = 2.0


@pytest.fixture
def nodes(postgres_url: str) -> Iterator[list[Cluster]]:
    """Three nodes started at once (they migrate the schema at the same time)."""
    with contextlib.ExitStack() as stack:
        started = [
            stack.enter_context(
                node(postgres_url, f"n{i}", 1, "--lease-seconds", str(LEASE), wait=False)
            )
            for i in range(3)
        ]
        for each in started:
            each.ready(1)
        yield started


def worker_of(nodes: list[Cluster], pid: int) -> int:
    """The index of the node whose worker has ``pid``."""
    for index, each in enumerate(nodes):
        if pid in each.worker_pids().values():
            return index
    raise AssertionError(f"no node has a worker with pid {pid}")


async def owned_by(nodes: list[Cluster], index: int, prefix: str, via: int) -> str:
    """A counter name whose object runs on node ``index`` (asked through node ``via``)."""
    for n in range(200):
        status, _, body = await get(nodes[via].port, f"/{prefix}-{n}")
        assert status == 200, body
        if worker_of(nodes, body["owner"]) == index:
            return f"{prefix}-{n}"
    raise AssertionError(f"no counter of node {index} among 200")


async def test_a_counter_hit_through_three_nodes_counts_exactly(nodes: list[Cluster]) -> None:
    results: list[dict[str, Any]] = []

    async def client(n: int) -> None:
        for _ in range(10):
            status, _, body = await get(nodes[n % 3].port, "/shared")
            assert status == 200, body
            results.append(body)

    async with trio.open_nursery() as nursery:
        for n in range(9):
            nursery.start_soon(client, n)
    assert sorted(r["stored"] for r in results) == list(range(1, 91)), "no lost update"
    assert sorted(r["hits"] for r in results) == list(range(1, 91)), "one live instance"
    assert len({r["owner"] for r in results}) == 1, "one process runs the object"


async def test_objects_spread_over_the_nodes(nodes: list[Cluster]) -> None:
    owners = set()
    for n in range(48):
        _, _, body = await get(nodes[n % 3].port, f"/spread-{n}")
        owners.add(worker_of(nodes, body["owner"]))
    assert owners == {0, 1, 2}, f"objects ran on nodes {owners} only"


async def test_a_websocket_reaches_its_object_on_another_node(nodes: list[Cluster]) -> None:
    name = await owned_by(nodes, 0, "room", via=1)
    owner_pid = nodes[0].worker_pids()[0]

    def chat() -> list[dict[str, Any]]:
        with contextlib.ExitStack() as stack:
            # One client through each node; two of them relayed to node 0.
            clients = [
                stack.enter_context(connect(f"ws://127.0.0.1:{each.port}/{name}")) for each in nodes
            ]
            clients[2].send("hello")
            replies = [json.loads(c.recv(timeout=10)) for c in clients]
            # Order and content survive the relay, both ways.
            for n in range(50):
                clients[1].send(f"m{n}")
            texts = [json.loads(clients[1].recv(timeout=10))["text"] for _ in range(50)]
            assert texts == [f"m{n}" for n in range(50)]
            return replies

    replies = await trio.to_thread.run_sync(chat)
    assert {r["text"] for r in replies} == {"hello"}
    assert {r["sockets"] for r in replies} == {3}, "get_websockets() lists all three"
    assert {r["owner"] for r in replies} == {owner_pid}, "they all live on the owner's node"


async def test_auto_responses_and_attachments_work_through_the_relay(nodes: list[Cluster]) -> None:
    def talk(port: int, name: str) -> tuple[str, str]:
        with connect(f"ws://127.0.0.1:{port}/echo/{name}?who=ann") as ws:
            ws.send("ping")
            pong = str(ws.recv(timeout=10))
            ws.send("hi")
            return pong, str(ws.recv(timeout=10))

    for n in range(40):  # an echo object on another node than the one connected to
        pong, reply = await trio.to_thread.run_sync(talk, nodes[0].port, f"e{n}")
        who, tag, pid, text = reply.split(":")
        if worker_of(nodes, int(pid)) != 0:
            assert (pong, who, tag, text) == ("pong", "ann", "ann", "hi")
            return
    raise AssertionError("no echo object on another node among 40")


async def test_a_killed_node_s_objects_answer_elsewhere_and_lose_nothing(
    nodes: list[Cluster],
) -> None:
    victim = nodes[0]
    victim_pid = victim.worker_pids()[0]
    name = await owned_by(nodes, 0, "victim", via=1)
    for _ in range(4):
        await get(nodes[1].port, f"/{name}")  # 5 acknowledged writes in all
    alarmed = await owned_by(nodes, 0, "alarmed", via=2)
    status, _, _ = await get(nodes[2].port, f"/{alarmed}/set-alarm?in=3")
    assert status == 200

    def open_socket() -> Any:
        ws = connect(f"ws://127.0.0.1:{nodes[1].port}/{name}", legacy=True)
        ws.send("here")
        assert json.loads(ws.recv(timeout=10))["owner"] == victim_pid
        return ws

    ws = await trio.to_thread.run_sync(open_socket)
    victim.kill_node()
    started = trio.current_time()

    def dropped() -> ConnectionClosed:
        try:
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=30)
        finally:
            ws.close()
        return closed.value

    closed = await trio.to_thread.run_sync(dropped)
    assert closed.rcvd is None, "the socket dropped without a close frame (1006)"

    seen = []
    while True:
        try:
            status, _, body = await get(nodes[1].port, f"/{name}", within=15)
        except (OSError, trio.TooSlowError) as exc:
            status, body = 0, repr(exc)
        seen.append((round(trio.current_time() - started, 2), status))
        if status == 200:
            break
        assert trio.current_time() - started < 20, f"no answer within 20 s: {seen}"
        await trio.sleep(0.1)
    recovered = trio.current_time() - started
    assert body["stored"] == 6, "no acknowledged write lost"
    assert worker_of(nodes, body["owner"]) in (1, 2)
    # Its leases lapse at most a lease after the kill; the others take them
    # within a round (a quarter of the lease); 2 s of room for a loaded machine.
    assert recovered < 1.25 * LEASE + 2, f"answered again after {recovered:.1f} s: {seen}"

    # The client reconnects through any node and reaches the object where it runs now.
    def reconnect() -> dict[str, Any]:
        with connect(f"ws://127.0.0.1:{nodes[2].port}/{name}") as again:
            again.send("back")
            reply: dict[str, Any] = json.loads(again.recv(timeout=10))
            return reply

    assert (await trio.to_thread.run_sync(reconnect))["owner"] == body["owner"]

    # The alarm set on the dead node fires on another.
    deadline = trio.current_time() + 20
    while True:
        _, _, state = await get(nodes[2].port, f"/{alarmed}/alarm")
        if state["alarm"] is not None:
            break
        assert trio.current_time() < deadline, "the alarm never fired"
        await trio.sleep(0.2)
    assert state["alarm"]["fired_in"] != victim_pid
    assert worker_of(nodes, state["alarm"]["fired_in"]) in (1, 2)


async def test_a_node_paused_past_its_lease_cannot_commit_when_resumed(
    nodes: list[Cluster],
) -> None:
    _, _, started = await get(nodes[0].port, "/tick/start")
    writer = started["started"]  # the ticker's owner writes in the background
    paused = nodes[worker_of(nodes, writer)]
    reader = next(each for each in nodes if each is not paused)
    await trio.sleep(0.5)
    paused.signal_node(signal.SIGSTOP)
    try:
        deadline = trio.current_time() + 30
        while True:
            # Calls to the paused owner end in an error once its lease lapses: ask again.
            status, _, body = await get(reader.port, "/tick/read", within=30)
            if status == 200 and body["owner"] != writer:
                break
            assert trio.current_time() < deadline, "ownership never moved"
            await trio.sleep(0.5)
    finally:
        resumed_at = time.time()
        paused.signal_node(signal.SIGCONT)
    await trio.sleep(3)  # the resumed worker's loop wakes and tries to commit
    _, _, body = await get(reader.port, "/tick/read")
    late = [tick for tick in body["ticks"] if tick[0] == writer and tick[1] >= resumed_at]
    assert late == [], f"{len(late)} write(s) of the stale owner reached the database"
    paused.wait_for(rf"w0-{writer}-\w+ lost \d+ shard")


async def test_sql_state_follows_its_object_to_another_node(nodes: list[Cluster]) -> None:
    for n in range(100):
        _, _, body = await get(nodes[1].port, f"/ledger/l{n}/add?amount={n}")
        if worker_of(nodes, body["owner"]) == 0:
            name, first = f"l{n}", n
            break
    else:
        raise AssertionError("no ledger on node 0")
    for amount in (7, 8):
        status, _, body = await get(nodes[1].port, f"/ledger/{name}/add?amount={amount}")
        assert status == 200
    nodes[0].kill_node()
    deadline = trio.current_time() + 20
    while True:
        try:
            status, _, body = await get(nodes[2].port, f"/ledger/{name}", within=15)
        except (OSError, trio.TooSlowError):
            status = 0
        if status == 200:
            break
        assert trio.current_time() < deadline, "the ledger never answered again"
        await trio.sleep(0.2)
    assert [row["amount"] for row in body["entries"]] == [first, 7, 8]
    assert worker_of(nodes, body["owner"]) in (1, 2)


async def test_the_database_restarting_under_load_loses_nothing_acknowledged(
    nodes: list[Cluster], postgres_server: PostgresServer
) -> None:
    acknowledged: dict[str, int] = {}
    statuses: list[tuple[float, int, str]] = []
    start = trio.current_time()

    async def client(n: int, until: float) -> None:
        name = f"load-{n}"
        while trio.current_time() < until:
            try:
                status, headers, body = await get(nodes[n % 3].port, f"/{name}", within=20)
            except (OSError, trio.TooSlowError) as exc:
                statuses.append((trio.current_time() - start, 0, repr(exc)))
                await trio.sleep(0.05)
                continue
            statuses.append((trio.current_time() - start, status, str(body)))
            if status == 200:
                acknowledged[name] = max(acknowledged.get(name, 0), body["stored"])
            else:
                await trio.sleep(0.05)

    async with trio.open_nursery() as nursery:
        until = trio.current_time() + 20
        for n in range(6):
            nursery.start_soon(client, n, until)
        await trio.sleep(2)
        await trio.to_thread.run_sync(postgres_server.stop)
        stopped = trio.current_time() - start
        # Longer than the backend waits for a connection (5 s): callers get an answer.
        await trio.sleep(8)
        restarting = trio.current_time() - start
        await trio.to_thread.run_sync(postgres_server.start)
        restarted = trio.current_time() - start

    during = [s for s in statuses if stopped + 0.5 < s[0] < restarting]
    assert during and all(status != 200 for _, status, _ in during), "no write while it was down"
    assert any(status == 503 for _, status, _ in during), "clear errors meanwhile"
    unclear = [s for s in statuses if s[1] not in (200, 503)]
    failures = [line for each in nodes for line in each.lines if "worker failed" in line]
    assert unclear == [], f"only 503 while the database is away or back: {unclear} {failures}"
    assert any("unavailable" in body for _, status, body in during if status == 503)
    late = [s for s in statuses if s[0] > restarted + 6]
    assert late and all(status == 200 for _, status, _ in late), f"service resumed: {late[:5]}"
    for name, stored in acknowledged.items():
        _, _, body = await get(nodes[0].port, f"/{name}")
        assert body["stored"] == stored + 1, f"{name}: an acknowledged write was lost"


def test_data_dir_and_database_together_are_refused(postgres_url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "trio_durable", "serve", "tests.cluster.app:app",
         "--data-dir", "somewhere", "--database", postgres_url],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "only one of --data-dir and --database" in done.stderr
