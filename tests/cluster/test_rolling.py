"""SIGHUP: a rolling restart hands every open socket to a new process; no client notices."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from websockets.sync.client import ClientConnection, connect

from .workers import Chatter, cluster

pytestmark = pytest.mark.slow


def test_a_rolling_restart_under_traffic_closes_nothing_and_loses_nothing(
    tmp_path: Path,
) -> None:
    with cluster(tmp_path / "data") as running:
        base = f"ws://127.0.0.1:{running.port}/echo"
        old_pids = set(running.worker_pids().values())
        chatters = [
            Chatter(f"{base}/room{n % 5}?who=c{n}", f"c{n}", pause=0.01 if n % 2 else 1.5)
            for n in range(12)
        ]
        # One more client, idle (hibernated) all along, with an auto-response timestamp.
        with connect(f"{base}/room0?who=idle") as idle:
            idle.send("ping")
            assert idle.recv(timeout=10) == "pong"
            idle.send("when?")
            stamp = json.loads(idle.recv(timeout=10))
            for chatter in chatters:
                chatter.start()
            time.sleep(1.5)
            running.process.send_signal(signal.SIGHUP)
            running.wait_for(r"rolling restart done", timeout=120)
            time.sleep(2)
            for chatter in chatters:
                chatter.stop.set()
            for chatter in chatters:
                chatter.join(30)
            new_pids = set(running.worker_pids().values())
            problems = {c.who: c.problem for c in chatters if c.problem}
            assert problems == {}, problems
            for chatter in chatters:
                assert chatter.echoes == [str(n) for n in range(1, chatter.sent + 1)], (
                    f"{chatter.who}: every message answered, in order"
                )
            assert new_pids.isdisjoint(old_pids), "every worker was replaced"
            served_by_new = [c for c in chatters if c.owners & {str(p) for p in new_pids}]
            assert served_by_new, "the objects run in the new processes afterwards"
            idle.send("when?")
            assert json.loads(idle.recv(timeout=10)) == stamp, "auto-response time moved too"
            idle.send("hello")
            assert idle.recv(timeout=10).startswith("idle:idle:"), "the idle socket still works"
        for chatter in chatters:
            with contextlib.suppress(Exception):
                chatter.ws.close()


class Browser(threading.Thread):
    """HTTP requests one after another, each on a new connection, counting every outcome."""

    def __init__(self, port: int, name: str) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.name = name
        self.answers: list[int] = []
        self.failures: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}/{self.name}", timeout=30
                ) as response:
                    self.answers.append(json.loads(response.read())["stored"])
            except Exception as exc:  # refused, reset, 5xx: all count
                self.failures.append(repr(exc))


def test_a_rolling_restart_answers_every_http_request(tmp_path: Path) -> None:
    with cluster(tmp_path / "data") as running:
        browsers = [Browser(running.port, f"page{n}") for n in range(4)]
        for browser in browsers:
            browser.start()
        time.sleep(1)
        running.process.send_signal(signal.SIGHUP)
        running.wait_for(r"rolling restart done", timeout=120)
        time.sleep(1)
        for browser in browsers:
            browser.stop.set()
        for browser in browsers:
            browser.join(60)
        failures = {b.name: b.failures[:3] for b in browsers if b.failures}
        assert failures == {}, failures
        for browser in browsers:
            assert len(browser.answers) > 10
            assert browser.answers == list(range(1, len(browser.answers) + 1)), (
                f"{browser.name}: every acknowledged write counted once, in order"
            )


def test_a_sighup_during_a_rolling_restart_queues_one_more(tmp_path: Path) -> None:
    with cluster(tmp_path / "data") as running:
        base = f"ws://127.0.0.1:{running.port}/echo"
        first_pids = set(running.worker_pids().values())
        chatters = [
            Chatter(f"{base}/room{n % 3}?who=c{n}", f"c{n}", pause=0.01 if n % 2 else 0.5)
            for n in range(6)
        ]
        for chatter in chatters:
            chatter.start()
        time.sleep(1)
        running.process.send_signal(signal.SIGHUP)
        time.sleep(0.2)
        running.process.send_signal(signal.SIGHUP)
        running.wait_for(r"rolling restart done", timeout=180, count=2)
        time.sleep(1)
        for chatter in chatters:
            chatter.stop.set()
        for chatter in chatters:
            chatter.join(30)
        assert running.process.poll() is None, f"the supervisor survived:\n{running.log}"
        assert "another one follows" in running.log
        problems = {c.who: c.problem for c in chatters if c.problem}
        assert problems == {}, f"{problems}\n{running.log}"
        for chatter in chatters:
            assert chatter.echoes == [str(n) for n in range(1, chatter.sent + 1)], (
                f"{chatter.who}: every message answered, in order"
            )
        started = re.findall(r"worker (\d+) \(pid (\d+)\) serves", running.log)
        assert len(started) == 6, f"two workers, then two successors per restart: {started}"
        alive = []
        for _, pid in started:
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                continue
            alive.append(int(pid))
        assert sorted(alive) == sorted(running.worker_pids().values()), "one worker per slot"
        assert first_pids.isdisjoint(alive)
        for chatter in chatters:
            with contextlib.suppress(Exception):
                chatter.ws.close()


class Pipeliner(threading.Thread):
    """Sends bursts of numbered messages before reading their echoes, resting in between."""

    def __init__(self, url: str, who: str, burst: int, rest: float) -> None:
        super().__init__(daemon=True)
        self.who = who
        self.burst = burst
        self.rest = rest
        self.ws: ClientConnection = connect(url, legacy=True)  # closed by the test
        self.sent = 0
        self.echoes: list[str] = []
        self.problem: str | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                first = self.sent + 1
                for _ in range(self.burst):
                    self.sent += 1
                    self.ws.send(str(self.sent))
                for expected in range(first, self.sent + 1):
                    reply = self.ws.recv(timeout=20)
                    assert isinstance(reply, str)
                    number = reply.rsplit(":", 1)[1]
                    if number != str(expected):
                        self.problem = f"expected {expected}, got {reply!r}"
                        return
                    self.echoes.append(number)
                time.sleep(self.rest)
        except Exception as exc:  # a close, a timeout, a reply of the wrong shape
            self.problem = f"after {self.sent} sent: {exc!r}"


def test_a_rolling_restart_moves_hibernated_objects_and_pipelined_messages(
    tmp_path: Path,
) -> None:
    with cluster(tmp_path / "data", 2, "--hibernate-after", "0.3") as running:
        base = f"ws://127.0.0.1:{running.port}/echo"
        # Some rest longer than --hibernate-after (their objects hibernate
        # between bursts), some keep theirs awake; each has 5 messages in flight.
        senders = [
            Pipeliner(f"{base}/pipe{n}?who=p{n}", f"p{n}", burst=5, rest=0.6 if n % 2 else 0.02)
            for n in range(8)
        ]
        for sender in senders:
            sender.start()
        running.wait_for(r"hibernated echoes:pipe", timeout=30)
        running.process.send_signal(signal.SIGHUP)
        running.wait_for(r"rolling restart done", timeout=120)
        time.sleep(1.5)
        for sender in senders:
            sender.stop.set()
        for sender in senders:
            sender.join(30)
        problems = {s.who: s.problem for s in senders if s.problem}
        assert problems == {}, f"{problems}\n{running.log}"
        for sender in senders:
            assert sender.echoes == [str(n) for n in range(1, sender.sent + 1)], (
                f"{sender.who}: every message answered once, in order"
            )
            assert sender.sent >= 10
        restarted_at = running.log.index("rolling restart of")
        assert re.search(r"hibernated echoes:pipe", running.log[restarted_at:]), (
            "objects hibernate in the new workers too"
        )
        for sender in senders:
            with contextlib.suppress(Exception):
                sender.ws.close()
