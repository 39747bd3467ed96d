"""``trio-durable serve --workers 2``: real worker processes on one port and one data dir."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import trio
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from .workers import ROOT, Chatter, Cluster, cluster, get

pytestmark = pytest.mark.slow


async def test_a_counter_hit_through_every_worker_counts_exactly(tmp_path: Path) -> None:
    with cluster(tmp_path / "data") as running:
        results: list[dict[str, Any]] = []
        accepted_by: set[str] = set()

        async def client() -> None:
            for _ in range(10):
                status, headers, body = await get(running.port, "/shared")
                assert status == 200, (status, body)
                results.append(body)
                accepted_by.add(headers["x-accepted-by"])

        async with trio.open_nursery() as nursery:
            for _ in range(6):
                nursery.start_soon(client)
        assert sorted(r["stored"] for r in results) == list(range(1, 61)), "no lost update"
        assert sorted(r["hits"] for r in results) == list(range(1, 61)), "one live instance"
        assert len({r["owner"] for r in results}) == 1, "one process runs the object"
        assert len(accepted_by) == 2, f"both workers accepted requests: {accepted_by}"


async def test_objects_spread_over_both_workers(tmp_path: Path) -> None:
    with cluster(tmp_path / "data") as running:
        owners = set()
        for n in range(24):
            _, _, body = await get(running.port, f"/spread-{n}")
            owners.add(body["owner"])
        assert owners == set(running.worker_pids().values()), owners


async def test_one_rooms_sockets_accepted_by_both_workers_all_get_its_broadcasts(
    tmp_path: Path,
) -> None:
    with cluster(tmp_path / "data") as running:
        url = f"ws://127.0.0.1:{running.port}/room"

        def chat() -> list[dict[str, Any]]:
            with contextlib.ExitStack() as stack:
                clients = [stack.enter_context(connect(url)) for _ in range(8)]
                clients[0].send("hello")
                return [json.loads(c.recv(timeout=10)) for c in clients]

        replies = await trio.to_thread.run_sync(chat)
        assert {r["text"] for r in replies} == {"hello"}
        assert {r["sockets"] for r in replies} == {8}, "get_websockets() lists all eight"
        assert len({r["owner"] for r in replies}) == 1, "they all live in the owner's process"


async def test_a_killed_worker_s_objects_answer_again_and_lose_nothing(tmp_path: Path) -> None:
    with cluster(tmp_path / "data") as running:
        pids = running.worker_pids()
        # An object the victim owns, with acknowledged writes.
        victim_pid = pids[0]
        name = ""
        for n in range(64):
            _, _, body = await get(running.port, f"/victim-{n}")
            if body["owner"] == victim_pid:
                name = f"victim-{n}"
                break
        assert name, "an object owned by worker 0"
        for _ in range(4):
            await get(running.port, f"/{name}")  # stored: 5 acknowledged writes in all
        os.kill(victim_pid, signal.SIGKILL)
        started = trio.current_time()
        seen = []
        while True:
            try:
                status, _, body = await get(running.port, f"/{name}", within=10)
            except (OSError, trio.TooSlowError) as exc:
                status, body = 0, repr(exc)
            seen.append((round(trio.current_time() - started, 2), status))
            if status == 200:
                break
            assert trio.current_time() - started < 10, "no answer within 10 s"
            await trio.sleep(0.1)
        recovered = trio.current_time() - started
        assert body["stored"] == 6, "no acknowledged write lost"
        assert body["owner"] != victim_pid
        assert recovered < 5, f"answered again after {recovered:.1f} s: {seen}"


def _single_serve(data_dir: Path) -> list[str]:
    """``serve`` of the test app in one process on a free port."""
    return [
        sys.executable, "-m", "trio_durable", "serve", "tests.cluster.app:app",
        "--port", "0", "--data-dir", str(data_dir),
    ]  # fmt: skip


def test_a_second_server_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    with cluster(tmp_path / "data") as running:
        second = subprocess.run(
            _single_serve(tmp_path / "data"),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 2, second.stderr
        line = second.stderr.strip().splitlines()[-1]
        assert str(tmp_path / "data") in line and f"PID {running.process.pid}" in line, line


def test_sigterm_stops_every_worker_with_exit_0_and_clients_get_1001(tmp_path: Path) -> None:
    with cluster(tmp_path / "data") as running:
        pids = list(running.worker_pids().values())
        with connect(f"ws://127.0.0.1:{running.port}/bye") as ws:
            running.process.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        assert running.process.wait(30) == 0
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)


async def test_a_paused_worker_whose_shards_moved_cannot_commit_when_resumed(
    tmp_path: Path,
) -> None:
    with cluster(tmp_path / "data") as running:
        _, _, started = await get(running.port, "/tick/start")
        writer = started["started"]  # the ticker's owner writes in the background
        await trio.sleep(0.5)
        os.kill(writer, signal.SIGSTOP)
        try:
            # The other worker takes the paused one's shards once its lease lapses.
            deadline = trio.current_time() + 20
            while True:
                # While the owner is paused, calls to it end in a clear error
                # (its link is dropped once its lease lapses): ask again.
                status, _, body = await get(running.port, "/tick/read", within=20)
                if status == 200 and body["owner"] != writer:
                    break
                assert trio.current_time() < deadline, "ownership never moved"
                await trio.sleep(0.5)
        finally:
            resumed_at = time.time()
            os.kill(writer, signal.SIGCONT)
        await trio.sleep(3)  # the resumed worker's loop wakes and tries to commit
        _, _, body = await get(running.port, "/tick/read")
        late = [tick for tick in body["ticks"] if tick[0] == writer and tick[1] >= resumed_at]
        assert late == [], f"{len(late)} write(s) of the stale owner reached the disk"
        assert f"w0-{writer}" in running.log or f"w1-{writer}" in running.log
        member = next(m for m in (f"w0-{writer}", f"w1-{writer}") if m in running.log)
        assert re.search(rf"{member}-\w+ lost \d+ shard", running.log), running.log


async def test_serve_cluster_embeds_a_cluster_in_a_python_program(tmp_path: Path) -> None:
    script = (
        "import functools, sys, trio, trio_durable as td\n"
        "async def main():\n"
        "    async with trio.open_nursery() as nursery:\n"
        "        port = await nursery.start(functools.partial(\n"
        "            td.serve_cluster, 'tests.cluster.app:app', workers=2, port=0,\n"
        "            data_dir=sys.argv[1]))\n"
        "        print(port, flush=True)\n"
        "trio.run(main)\n"
    )
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", script, str(tmp_path / "data")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        with trio.fail_after(60):
            port = int((await process.stdout.receive_some()).strip())
        status, _, body = await get(port, "/embedded")
        assert (status, body["stored"]) == (200, 1)
    finally:
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(60):
            code = await process.wait()
    assert code == 0, "SIGTERM stops the embedded cluster cleanly"


_EMBEDDED = (
    "import functools, json, sys, trio, trio_durable as td\n"
    "async def main():\n"
    "    async with trio.open_nursery() as nursery:\n"
    "        port = await nursery.start(functools.partial(\n"
    "            td.serve_cluster, 'tests.cluster.app:app', workers=2, port=0,\n"
    "            data_dir=sys.argv[1], **json.loads(sys.argv[2])))\n"
    "        print(port, flush=True)\n"
    "try:\n"
    "    trio.run(main)\n"
    "except* ValueError as group:\n"
    "    print('refused:', group.exceptions[0], flush=True)\n"
)


async def test_serve_cluster_passes_its_options_to_every_worker(tmp_path: Path) -> None:
    options = {"hibernate_after": 2.5, "durability": "power", "max_body_bytes": 1000}
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", _EMBEDDED, str(tmp_path / "data"), json.dumps(options)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        with trio.fail_after(60):
            port = int((await process.stdout.receive_some()).strip())
        seen = {}
        for _ in range(12):
            _, _, body = await get(port, "/options")
            seen[body["pid"]] = body["hibernate_after"]
        assert len(seen) == 2 and set(seen.values()) == {2.5}, f"open_runtime's option: {seen}"
        _, _, backend = await get(port, "/backend")
        assert backend["durability"] == "power", "the storage's option"
        with trio.fail_after(15):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(
                    b"POST /big HTTP/1.1\r\nhost: x\r\ncontent-length: 2000\r\n"
                    b"connection: close\r\n\r\n" + b"x" * 2000
                )
                answer = await stream.receive_some(4096)
        assert answer.startswith(b"HTTP/1.1 413"), f"serve()'s option: {answer[:40]!r}"
    finally:
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(60):
            code = await process.wait()
    assert code == 0


async def test_serve_cluster_refuses_a_bad_option_naming_it(tmp_path: Path) -> None:
    with trio.fail_after(60):  # refused at start: no restarting workers in a loop
        result = await trio.run_process(
            [
                sys.executable,
                "-c",
                _EMBEDDED,
                str(tmp_path / "data"),
                json.dumps({"hibernate_after": -1}),
            ],
            cwd=ROOT,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    out = result.stdout.decode()
    assert out.startswith("refused: the workers refused to start: hibernate_after must be"), out
    assert result.returncode == 0, result.stderr.decode()[-2000:]


async def test_a_killed_worker_s_alarm_fires_in_another_worker(tmp_path: Path) -> None:
    with cluster(tmp_path / "data") as running:
        _, _, body = await get(running.port, "/waker/set-alarm?in=3")
        owner = body["owner"]
        os.kill(owner, signal.SIGKILL)
        with trio.fail_after(30):
            while True:
                status, _, body = await get(running.port, "/waker/alarm")
                if status == 200 and body["alarm"] is not None:
                    break
                await trio.sleep(0.2)
        assert body["alarm"]["fired_in"] != owner, "fired in the worker that took the shard"


def test_sighup_to_a_single_process_serve_is_logged_and_it_goes_on_serving(
    tmp_path: Path,
) -> None:
    process = subprocess.Popen(
        _single_serve(tmp_path / "data"),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    running = Cluster(process)
    try:
        running.wait_for(r"serving \S+ on http://\S+", timeout=60)
        match = re.search(r"serving \S+ on (http://\S+)", running.log)
        assert match is not None
        with urllib.request.urlopen(f"{match[1]}/hup", timeout=30) as response:
            before = json.loads(response.read())
        process.send_signal(signal.SIGHUP)
        running.wait_for(r"SIGHUP ignored", timeout=30)
        with urllib.request.urlopen(f"{match[1]}/hup", timeout=30) as response:
            after = json.loads(response.read())
        assert process.poll() is None, "SIGHUP did not kill it"
        assert (after["stored"], after["hits"]) == (2, 2), "the same process serves on"
        assert after["owner"] == before["owner"] == process.pid
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        running._reader.join(5)
        assert process.stderr is not None
        process.stderr.close()


class KeptAlive(threading.Thread):
    """HTTP requests one after another on one keep-alive connection, each outcome counted."""

    def __init__(self, connection: http.client.HTTPConnection, path: str) -> None:
        super().__init__(daemon=True)
        self.connection = connection
        self.path = path
        self.stored: list[int] = []
        self.problem: str | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.connection.request("GET", self.path)
                response = self.connection.getresponse()
                body = json.loads(response.read())
                if response.status != 200:
                    self.problem = f"status {response.status}: {body}"
                    return
                self.stored.append(body["stored"])
                time.sleep(0.02)
        except Exception as exc:  # a reset, a timeout
            self.problem = f"after {len(self.stored)} answers: {exc!r}"


def test_a_killed_worker_leaves_the_other_workers_clients_unaffected(tmp_path: Path) -> None:
    with cluster(tmp_path / "data") as running:
        pids = running.worker_pids()
        victim, survivor = pids[0], pids[1]
        base = f"ws://127.0.0.1:{running.port}/echo"
        # WebSocket clients of objects the survivor runs (accepted by either worker).
        chatters: list[Chatter] = []
        n = 0
        while len(chatters) < 6:
            n += 1
            chatter = Chatter(f"{base}/iso{n}?who=c{n}", f"c{n}", pause=0.02)
            chatter.ws.send("0")
            owner = str(chatter.ws.recv(timeout=10)).split(":")[2]
            if owner == str(survivor):
                chatters.append(chatter)
            else:
                chatter.ws.close()
            assert n < 200, "no object of the survivor found"
        for chatter in chatters:
            chatter.sent = 0  # the probe above is not counted
        # An HTTP keep-alive connection that the survivor accepted, to its object.
        path = ""
        for n in range(200):
            connection = http.client.HTTPConnection("127.0.0.1", running.port, timeout=30)
            connection.request("GET", f"/kept-{n}")
            response = connection.getresponse()
            body = json.loads(response.read())
            if body["owner"] == survivor and response.headers["x-accepted-by"] == str(survivor):
                path = f"/kept-{n}"
                break
            connection.close()
        assert path, "no connection accepted by the survivor to an object of its own"
        browser = KeptAlive(connection, path)
        for chatter in chatters:
            chatter.start()
        browser.start()
        time.sleep(1)
        os.kill(victim, signal.SIGKILL)
        # Through the failover, and the victim's restart (its shards move back to it).
        running.wait_for(r"worker 0 \(pid \d+\) serves", timeout=60, count=2)
        time.sleep(2)
        for chatter in [*chatters, browser]:
            chatter.stop.set()
        for chatter in [*chatters, browser]:
            chatter.join(30)
        problems = {c.who: c.problem for c in chatters if c.problem}
        assert problems == {}, f"{problems}\n{running.log}"
        for chatter in chatters:
            assert chatter.echoes == [str(k) for k in range(1, chatter.sent + 1)], chatter.who
            assert chatter.owners == {str(survivor)}, "its object never moved"
        assert browser.problem is None, browser.problem
        assert browser.stored == list(range(2, len(browser.stored) + 2)), "every request answered"
        assert len(browser.stored) > 20
        connection.close()
        for chatter in chatters:
            with contextlib.suppress(Exception):
                chatter.ws.close()
