"""Chaos on three nodes: kill -9 and SIGSTOP under load; nothing acknowledged may be lost.

Run: ``python benchmarks/chaos.py [--quick] [--seconds 600] [--interval 30]
[--lease-seconds 4] [--seed N] [--json FILE]``.

Three nodes (``trio-durable serve --database URL --node nI``, one worker
each, in sessions of their own) share a throwaway PostgreSQL
(``tests/postgres/server.py``) and serve ``benchmarks/chaos_app.py``. Under
HTTP write load and WebSocket load (every message a write), every
``--interval`` seconds a random node is either killed with ``kill -9``
(supervisor and worker at once, as a machine dies; it is started again
under the same name once its objects answer elsewhere) or stopped with
``SIGSTOP`` for 1.5 to 2.5 times the lease, then resumed with ``SIGCONT``.
The two kinds alternate. Clients go to the nodes that are up (as a load
balancer with health checks would); a WebSocket that closes or stalls
reconnects through another node. Alarm chains fire all along.

At the end the load stops, every node runs again, and the checks read
every object's log (see ``chaos_app.py``). The run fails (exit 1) on:

* a **lost write**: an acknowledged write (an HTTP 200, a WebSocket reply)
  that is not in its object's log at its sequence number, or a gap in a log;
* a **double activation**: in an object's log, in sequence order, the
  entries of one activation (its nonce) are not contiguous, the shard
  epoch goes down, two activations share an epoch, or one activation's
  epoch changes;
* an **alarm due and not fired** (each chain's pending alarm may be at
  most ``ALARM_GRACE`` seconds overdue once the nodes have settled);
* an **HTTP 500** (or any status but 200 and 503), or a fault's objects
  that no other node answers for within ``FAILOVER_LIMIT`` seconds.

503 answers, connection errors and WebSocket closes (1006 when a node dies)
are counted, not failures: a client retries them. ``--quick`` is 60 s with
a fault every 15 s and 2 s leases.

The failover time of a fault is from the signal until an object the victim
ran answers a write through another node.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import random
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import trio
import trio_websocket

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.cluster.workers import Cluster, get, node
from tests.postgres.server import running_server

APP = "benchmarks.chaos_app:app"
#: Seconds a due alarm may be late once the nodes have settled.
ALARM_GRACE = 3.0
#: Seconds after a fault within which another node must answer for the victim's objects.
FAILOVER_LIMIT = 60.0
#: Seconds an HTTP request or a WebSocket reply may take before the client gives up.
REQUEST_TIMEOUT = 15.0
WS_REPLY_TIMEOUT = 5.0
#: Exceptions of a request that reached no answer (the node died, stalled, or reset it).
NETWORK_ERRORS = (OSError, trio.TooSlowError, trio.BrokenResourceError, IndexError, ValueError)


@attrs.define(eq=False)
class Node:
    """One node of the deployment and what the chaos did to it."""

    name: str
    running: contextlib.AbstractContextManager[Cluster] | None = None
    cluster: Cluster | None = None
    state: str = "down"  # up, stopped, killed, starting
    logs: list[str] = attrs.field(factory=list)

    @property
    def port(self) -> int:
        assert self.cluster is not None
        return self.cluster.port

    def pids(self) -> set[int]:
        return set(self.cluster.worker_pids().values()) if self.cluster is not None else set()


@attrs.define
class Ack:
    """An acknowledged write: it must be in ``name``'s log at ``seq``."""

    name: str
    seq: int
    nonce: str
    client: str
    n: int


@attrs.define
class Fault:
    kind: str
    node: str
    at: float
    failover: float | None = None
    answered_by_victim: bool = False
    paused: float | None = None


@attrs.define(eq=False)
class Chaos:
    """The deployment, the load, the faults, and everything they saw."""

    args: argparse.Namespace
    url: str
    rng: random.Random
    nodes: list[Node] = attrs.field(factory=list)
    acks: list[Ack] = attrs.field(factory=list)
    http: collections.Counter[str] = attrs.field(factory=collections.Counter)
    ws: collections.Counter[str] = attrs.field(factory=collections.Counter)
    faults: list[Fault] = attrs.field(factory=list)
    unclear: list[str] = attrs.field(factory=list)
    started: float = 0.0

    # ------------------------------------------------------------------ nodes

    def up(self, *, besides: Node | None = None) -> list[Node]:
        return [n for n in self.nodes if n.state == "up" and n is not besides]

    def start_node(self, each: Node) -> None:
        """Start ``each`` under its name and wait until it serves (blocking)."""
        running = node(
            self.url,
            each.name,
            1,
            "--lease-seconds",
            str(self.args.lease_seconds),
            app=APP,
            wait=False,
        )
        each.state = "starting"
        each.running = running
        each.cluster = running.__enter__()
        each.cluster.ready(1, timeout=120)
        each.state = "up"

    def stop_node(self, each: Node) -> None:
        """Stop ``each`` (resumed first if stopped) and keep its log (blocking)."""
        if each.running is None:
            return
        if each.state == "stopped" and each.cluster is not None:
            each.cluster.signal_node(signal.SIGCONT)
        assert each.cluster is not None
        cluster = each.cluster
        try:
            each.running.__exit__(None, None, None)
        finally:
            each.logs.append(cluster.log)
            each.running = None
            each.state = "down"

    # ------------------------------------------------------------------- load

    async def request(self, via: Node, path: str) -> tuple[int, Any] | None:
        """One GET through ``via``; ``None`` when no answer came (counted)."""
        try:
            status, _, body = await get(via.port, path, within=REQUEST_TIMEOUT)
        except NETWORK_ERRORS as exc:
            self.http[f"no answer ({type(exc).__name__})"] += 1
            return None
        self.http[str(status)] += 1
        if status not in (200, 503):
            self.unclear.append(f"{status} on {path} via {via.name}: {str(body)[:200]}")
        return status, body

    async def write(self, via: Node, name: str, client: str, n: int) -> dict[str, Any] | None:
        """One HTTP write; its acknowledgement (recorded), or ``None``."""
        answer = await self.request(via, f"/w/{name}?c={client}&n={n}")
        if answer is None or answer[0] != 200:
            return None
        body: dict[str, Any] = answer[1]
        self.acks.append(Ack(name, body["seq"], body["nonce"], client, n))
        return body

    async def http_client(self, index: int) -> None:
        n = 0
        while True:
            candidates = self.up()
            if not candidates:
                await trio.sleep(0.1)
                continue
            n += 1
            name = f"h-{self.rng.randrange(self.args.http_objects)}"
            if await self.write(self.rng.choice(candidates), name, f"h{index}", n) is None:
                await trio.sleep(0.1)
            await trio.sleep(self.args.pause)

    async def ws_client(self, index: int) -> None:
        name = f"s-{index % self.args.ws_objects}"
        client = f"w{index}"
        n = 0
        last: Node | None = None
        while True:
            candidates = self.up(besides=last) or self.up()
            if not candidates:
                await trio.sleep(0.1)
                continue
            via = last = self.rng.choice(candidates)
            try:
                async with trio_websocket.open_websocket_url(
                    f"ws://127.0.0.1:{via.port}/ws/{name}",
                    connect_timeout=REQUEST_TIMEOUT,
                    disconnect_timeout=1,
                ) as ws:
                    self.ws["connections"] += 1
                    while True:
                        n += 1
                        await ws.send_message(json.dumps({"c": client, "n": n}))
                        with trio.move_on_after(WS_REPLY_TIMEOUT) as waited:
                            reply = json.loads(await ws.get_message())
                        if waited.cancelled_caught:
                            self.ws["stalled (reconnected)"] += 1
                            break
                        self.ws["acknowledged messages"] += 1
                        self.acks.append(Ack(name, reply["seq"], reply["nonce"], client, n))
                        await trio.sleep(self.args.ws_pause)
            except trio_websocket.ConnectionClosed as exc:
                code = exc.reason.code if exc.reason is not None else None
                self.ws[f"closed {code}"] += 1
            except trio_websocket.ConnectionRejected as exc:
                self.ws[f"refused {exc.status_code}"] += 1
                self.http[str(exc.status_code)] += 1
                if exc.status_code != 503:
                    self.unclear.append(f"upgrade refused {exc.status_code} via {via.name}")
            except (trio_websocket.HandshakeError, *NETWORK_ERRORS) as exc:
                self.ws[f"no connection ({type(exc).__name__})"] += 1
            await trio.sleep(0.1)

    async def start_chains(self) -> None:
        for k in range(self.args.chains):
            while True:
                answer = await self.request(self.rng.choice(self.up()), f"/chain/a-{k}?period=1.5")
                if answer is not None and answer[0] == 200:
                    break
                await trio.sleep(0.2)

    # ----------------------------------------------------------------- faults

    async def find_probe(self, victim: Node, number: int) -> str | None:
        """The name of an object the victim runs (written once through another node)."""
        victim_pids = victim.pids()
        for i in range(300):
            others = self.up(besides=victim)
            if not others:
                return None
            name = f"p-{number}-{i}"
            body = await self.write(others[0], name, "probe", 0)
            if body is not None and body["pid"] in victim_pids:
                return name
        return None

    async def measure_failover(self, fault: Fault, victim: Node, probe: str) -> None:
        """Write to ``probe`` through the other nodes until one answers; record how long."""
        victim_pids = victim.pids()
        n = 0
        while time.monotonic() - fault.at < FAILOVER_LIMIT:
            others = self.up(besides=victim)
            if others:
                n += 1
                body = await self.write(self.rng.choice(others), probe, "probe", n)
                if body is not None:
                    fault.failover = time.monotonic() - fault.at
                    fault.answered_by_victim = body["pid"] in victim_pids
                    return
            await trio.sleep(0.05)

    async def fault(self, kind: str, number: int) -> None:
        candidates = self.up()
        if len(candidates) < 2:
            return
        victim = self.rng.choice(candidates)
        probe = await self.find_probe(victim, number)
        fault = Fault(kind, victim.name, time.monotonic())
        self.faults.append(fault)
        cluster = victim.cluster
        assert cluster is not None
        if kind == "kill":
            victim.state = "killed"
            cluster.kill_node()
            fault.at = time.monotonic()
            if probe is not None:
                await self.measure_failover(fault, victim, probe)
            await trio.to_thread.run_sync(self.stop_node, victim)
            await trio.to_thread.run_sync(self.start_node, victim)
            return
        victim.state = "stopped"
        cluster.signal_node(signal.SIGSTOP)
        fault.at = time.monotonic()
        fault.paused = self.rng.uniform(1.5, 2.5) * self.args.lease_seconds
        async with trio.open_nursery() as nursery:
            if probe is not None:
                nursery.start_soon(self.measure_failover, fault, victim, probe)
            await trio.sleep(fault.paused)
            cluster.signal_node(signal.SIGCONT)
            victim.state = "up"

    async def chaos(self, until: float) -> None:
        kinds = ["kill", "stop"]
        self.rng.shuffle(kinds)
        number = 0
        next_at = self.started + min(self.args.interval / 2, 10.0)
        while next_at < until:
            await trio.sleep(max(0.0, next_at - time.monotonic()))
            await self.fault(kinds[number % 2], number)
            number += 1
            next_at += self.args.interval

    # ----------------------------------------------------------------- checks

    async def read_log(self, name: str) -> dict[str, Any]:
        deadline = time.monotonic() + 60
        while True:
            answer = await self.request(self.rng.choice(self.up()), f"/log/{name}")
            if answer is not None and answer[0] == 200:
                body: dict[str, Any] = answer[1]
                return body
            if time.monotonic() > deadline:
                raise RuntimeError(f"the log of {name} cannot be read: {answer}")
            await trio.sleep(0.2)

    async def settle_alarms(self) -> dict[str, Any]:
        """Wait (bounded) until no chain's pending alarm is overdue; count due and fired."""
        deadline = time.monotonic() + max(30.0, 6 * self.args.lease_seconds)
        while True:
            read_at = time.time()
            logs = {f"a-{k}": await self.read_log(f"a-{k}") for k in range(self.args.chains)}
            due = fired = 0
            overdue = []
            late = []
            for name, log in logs.items():
                for k, when in log["dues"].items():
                    if when > read_at - ALARM_GRACE:
                        continue  # not due yet (or only just)
                    due += 1
                    firing = log["fired"].get(k)
                    if firing is None:
                        overdue.append(f"{name}#{k} due {read_at - when:.1f} s ago")
                    else:
                        fired += 1
                        late.append(firing[0] - when)
            if not overdue or time.monotonic() > deadline:
                return {"due": due, "fired": fired, "overdue": overdue, "late": late}
            await trio.sleep(0.5)

    async def check_logs(self) -> dict[str, Any]:
        names = sorted(
            {ack.name for ack in self.acks} | {f"a-{k}" for k in range(self.args.chains)}
        )
        logs = {name: await self.read_log(name) for name in names}
        by_seq = {name: {entry[0]: entry for entry in log["entries"]} for name, log in logs.items()}
        lost: list[str] = []
        for ack in self.acks:
            entry = by_seq[ack.name].get(ack.seq)
            if entry is None or (entry[1], entry[4], entry[5]) != (ack.nonce, ack.client, ack.n):
                lost.append(f"{ack.name}#{ack.seq} ({ack.client} {ack.n}): found {entry}")
        doubles: list[str] = []
        gaps: list[str] = []
        entries_seen = 0
        for name, log in logs.items():
            in_order = sorted(log["entries"])
            entries_seen += len(in_order)
            if [e[0] for e in in_order] != list(range(1, len(in_order) + 1)):
                gaps.append(f"{name}: sequence numbers {[e[0] for e in in_order][:20]}...")
            found = activation_violations(name, in_order)
            doubles.extend(found)
            for violation in found[:3]:  # the entries around it, to see what happened
                seq = int(violation.split("#", 1)[1].split(":", 1)[0])
                doubles.extend(f"  {entry}" for entry in in_order[max(0, seq - 4) : seq + 3])
        return {"lost": lost, "doubles": doubles, "gaps": gaps, "entries": entries_seen}

    # -------------------------------------------------------------------- run

    async def run(self) -> dict[str, Any]:
        self.nodes = [Node(f"n{i}") for i in range(3)]
        async with trio.open_nursery() as nursery:
            for each in self.nodes:
                nursery.start_soon(trio.to_thread.run_sync, self.start_node, each)
        await self.start_chains()
        self.started = time.monotonic()
        until = self.started + self.args.seconds
        async with trio.open_nursery() as load:
            for i in range(self.args.http_clients):
                load.start_soon(self.http_client, i)
            for i in range(self.args.ws_clients):
                load.start_soon(self.ws_client, i)
            await self.chaos(until)
            await trio.sleep(max(0.0, until - time.monotonic()))
            load.cancel_scope.cancel()
        elapsed = time.monotonic() - self.started
        alarms = await self.settle_alarms()
        logs = await self.check_logs()
        return self.results(elapsed, alarms, logs)

    def results(
        self, elapsed: float, alarms: dict[str, Any], logs: dict[str, Any]
    ) -> dict[str, Any]:
        def failovers(kind: str) -> list[float]:
            return [f.failover for f in self.faults if f.kind == kind and f.failover is not None]

        unanswered = [f for f in self.faults if f.failover is None]
        http_500 = sum(v for k, v in self.http.items() if k.isdigit() and k not in ("200", "503"))
        violations = {
            "lost acknowledged writes": len(logs["lost"]),
            "log gaps": len(logs["gaps"]),
            "double activations": sum(1 for d in logs["doubles"] if not d.startswith("  ")),
            "alarms due and not fired": len(alarms["overdue"]),
            "HTTP 500 (or other unclear statuses)": http_500,
            "faults whose objects never answered elsewhere": len(unanswered),
        }
        return {
            "seconds": round(elapsed, 1),
            "lease_seconds": self.args.lease_seconds,
            "faults": {
                "kill": sum(f.kind == "kill" for f in self.faults),
                "stop": sum(f.kind == "stop" for f in self.faults),
            },
            "fault_log": [attrs.asdict(f) for f in self.faults],
            "acked_http_writes": sum(1 for a in self.acks if a.client.startswith(("h", "p"))),
            "acked_ws_messages": sum(1 for a in self.acks if a.client.startswith("w")),
            "log_entries": logs["entries"],
            "http": dict(self.http),
            "ws": dict(self.ws),
            "alarms_due": alarms["due"],
            "alarms_fired": alarms["fired"],
            "alarm_late_p50": _median(alarms["late"]),
            "alarm_late_max": max(alarms["late"], default=None),
            "failover_kill": failovers("kill"),
            "failover_stop": failovers("stop"),
            "answered_by_resumed_victim": sum(f.answered_by_victim for f in self.faults),
            "violations": violations,
            "details": {
                "lost": logs["lost"][:20],
                "gaps": logs["gaps"][:20],
                "doubles": logs["doubles"][:60],
                "overdue": alarms["overdue"][:20],
                "unclear": self.unclear[:20],
            },
            "passed": not any(violations.values()),
        }


def activation_violations(name: str, entries: list[list[Any]]) -> list[str]:
    """Signs in one log, in sequence order, that two activations were live at once.

    Entries are ``[seq, nonce, epoch, ...]``. One activation's entries are
    contiguous, carry one epoch, and epochs never go down; no two
    activations share an epoch.
    """
    found = []
    finished: set[str] = set()
    epoch_of: dict[str, int] = {}
    owner_of: dict[int, str] = {}
    previous: tuple[str, int] | None = None
    for seq, nonce, epoch, *_ in entries:
        if previous is not None and nonce != previous[0]:
            finished.add(previous[0])
            if nonce in finished:
                found.append(f"{name}#{seq}: activation {nonce} writes again after another")
        if previous is not None and epoch < previous[1]:
            found.append(f"{name}#{seq}: epoch {epoch} after {previous[1]}")
        if epoch_of.setdefault(nonce, epoch) != epoch:
            found.append(
                f"{name}#{seq}: activation {nonce} moved from epoch {epoch_of[nonce]} to {epoch}"
            )
        if owner_of.setdefault(epoch, nonce) != nonce:
            found.append(f"{name}#{seq}: epoch {epoch} shared by {owner_of[epoch]} and {nonce}")
        previous = (nonce, epoch)
    return found


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _seconds(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.1f} / {max(values):.1f} s ({len(values)})"


def print_table(result: dict[str, Any]) -> None:
    v = result["violations"]
    http = result["http"]
    no_answer = sum(count for key, count in http.items() if not key.isdigit())
    closes = ", ".join(
        f"{k}: {c}" for k, c in sorted(result["ws"].items()) if k.startswith("closed")
    )
    late = result["alarm_late_max"]
    rows = [
        ("duration, lease", f"{result['seconds']:.0f} s, {result['lease_seconds']:g} s"),
        ("faults (kill -9 / SIGSTOP)", f"{result['faults']['kill']} / {result['faults']['stop']}"),
        ("acknowledged HTTP writes", f"{result['acked_http_writes']:,}"),
        ("acknowledged WebSocket messages (each a write)", f"{result['acked_ws_messages']:,}"),
        ("log entries checked", f"{result['log_entries']:,}"),
        ("lost acknowledged writes / log gaps", f"{v['lost acknowledged writes']} / {v['log gaps']}"),
        ("double activations", str(v["double activations"])),
        ("alarms due / fired", f"{result['alarms_due']:,} / {result['alarms_fired']:,}"),
        ("alarm lateness p50 / max", "-" if late is None
         else f"{result['alarm_late_p50']:.2f} / {late:.1f} s"),
        ("failover after kill -9, p50 / max (n)", _seconds(result["failover_kill"])),
        ("failover after SIGSTOP, p50 / max (n)", _seconds(result["failover_stop"])),
        ("HTTP 200 / 503 / 500 and others / no answer",
         f"{http.get('200', 0):,} / {http.get('503', 0):,} / "
         f"{v['HTTP 500 (or other unclear statuses)']} / {no_answer:,}"),
        ("WebSocket connections / closes by code",
         f"{result['ws'].get('connections', 0):,} / {closes or 'none'}"),
        ("verdict", "PASS" if result["passed"] else "FAIL"),
    ]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    print(f"| {'chaos'.ljust(width)} | result |")
    print(f"| {'-' * width} | --- |")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")
    if not result["passed"]:
        for kind, items in result["details"].items():
            for item in items:
                print(f"{kind}: {item}", file=sys.stderr)


def save_logs(chaos: Chaos, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for each in chaos.nodes:
        for run, text in enumerate(each.logs):
            (directory / f"{each.name}-{run}.log").write_text(text)


@contextlib.contextmanager
def database(url: str | None) -> Iterator[str]:
    """The given (empty) database, or a throwaway server's for the run."""
    if url is not None:
        yield url
        return
    with running_server() as server:
        yield server.url()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with database(args.url) as url:
        chaos = Chaos(args, url, random.Random(args.seed))
        try:
            return await chaos.run()
        finally:
            for each in chaos.nodes:
                await trio.to_thread.run_sync(chaos.stop_node, each)
            log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="td-chaos-"))
            save_logs(chaos, log_dir)
            print(f"node logs: {log_dir}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="60 s, a fault every 15 s, 2 s leases")
    parser.add_argument("--seconds", type=float, help="how long the load runs (default 600)")
    parser.add_argument("--interval", type=float, help="seconds between faults (default 30)")
    parser.add_argument("--lease-seconds", type=float, help="the nodes' lease (default 4)")
    parser.add_argument("--http-clients", type=int, default=6)
    parser.add_argument("--http-objects", type=int, default=40)
    parser.add_argument("--pause", type=float, default=0.02, help="between an HTTP client's writes")
    parser.add_argument("--ws-clients", type=int, default=12)
    parser.add_argument("--ws-objects", type=int, default=8)
    parser.add_argument("--ws-pause", type=float, default=0.2, help="between a socket's messages")
    parser.add_argument("--chains", type=int, default=8, help="alarm chains (one alarm each 1.5 s)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--url", help="an empty database to use instead of a throwaway server")
    parser.add_argument("--log-dir", help="where to keep the nodes' logs (default: a new temp dir)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    quick = {"seconds": 60.0, "interval": 15.0, "lease_seconds": 2.0}
    full = {"seconds": 600.0, "interval": 30.0, "lease_seconds": 4.0}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    print(f"chaos: seed {args.seed}, {args.seconds:g} s, a fault every {args.interval:g} s, "
          f"{args.lease_seconds:g} s leases", file=sys.stderr)  # fmt: skip
    result = trio.run(main_async, args)
    result["seed"] = args.seed
    print_table(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()
