"""A lean WebSocket load generator: one process, one epoll set, no task per socket.

Run by the benchmarks as ``python -m benchmarks.loadgen``; it reads one JSON
command per line on stdin and answers with one JSON line on stdout (the first
line it prints is ``{"hello": pid}``). Connections persist across commands,
so the orchestrator can connect, let the server hibernate, then wake it.

Each connection costs a non-blocking stdlib socket and a small ``__slots__``
object with a ``bytearray`` receive buffer. The opening handshake is one
prepared request per path; client frames are masked with the all-zero key
(valid per RFC 6455: any key is) so that a prepared frame is sent as is.

Commands (``cmd`` plus arguments):

``connect``  port, start, count, objects, prefix, [sources, inflight, host]
    Open ``count`` connections numbered ``start..``; connection ``i`` asks for
    ``{prefix}{i % objects}``. ``sources`` > 1 binds them round-robin to
    127.0.0.1 .. 127.0.0.N (each source address has its own ephemeral ports).
``echo``  clients, seconds, size
    Closed loop: each of the first ``clients`` connections sends a text
    message, waits for its echo, sends the next, for ``seconds``.
``broadcast_round``  trigger, size, timeout
    If ``trigger``, send ``"broadcast"`` on the first connection; then wait
    until every connection got one ``size``-byte broadcast frame (and the
    trigger connection the ``done <seconds>`` report).
``sequential``  [limit], gap, timeout
    One message at a time, on each connection in turn; latency of each reply.
``storm``  at, spread, timeout
    One message to every connection, spread evenly over ``spread`` seconds
    from monotonic time ``at``; counts replies and their latency.
``flood``  seconds, [size, burst]
    Every connection sends ``size``-byte messages as fast as TCP takes them,
    throwing the echoes away unparsed; then the connections are dropped.
``probe``  port, seconds, handshake_path, [gap, handshake_interval]
    A bystander: echo round trips on the first connection, one at a time,
    and now and then a new connection's handshake time.
``soak``  ... (see `soak`)
``close``, ``stats``, ``quit``.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import os
import random
import select
import socket
import sys
import time
from collections import deque
from typing import Any

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
EPOLLIN = select.EPOLLIN
EPOLLOUT = select.EPOLLOUT
RECV = 65536

CONNECTING, HANDSHAKE, OPEN, CLOSED = 0, 1, 2, 3


def frame(payload: bytes, opcode: int = 1) -> bytes:
    """A masked client frame (all-zero mask key: the payload is unchanged)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


CLOSE_FRAME = frame(b"\x03\xe8", 8)


def parse(buf: bytearray) -> list[tuple[int, bytes]]:
    """Take the complete frames out of ``buf``; return (opcode, payload) pairs."""
    out = []
    pos = 0
    n = len(buf)
    while n - pos >= 2:
        b1 = buf[pos + 1]
        length = b1 & 0x7F
        head = 2
        if length == 126:
            if n - pos < 4:
                break
            length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
            head = 4
        elif length == 127:
            if n - pos < 10:
                break
            length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
            head = 10
        if b1 & 0x80:  # masked: only the raw TCP echo returns our own frames
            mask = bytes(buf[pos + head : pos + head + 4])
            head += 4
            if n - pos < head + length:
                break
            payload = bytes(buf[pos + head : pos + head + length])
            if mask != b"\0\0\0\0":
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        else:
            if n - pos < head + length:
                break
            payload = bytes(buf[pos + head : pos + head + length])
        out.append((buf[pos] & 0x0F, payload))
        pos += head + length
    if pos:
        del buf[:pos]
    return out


class Conn:
    __slots__ = ("buf", "fd", "got", "index", "peer", "sent", "sent_at", "seq", "sock", "state")

    def __init__(self, sock: socket.socket, index: int) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.index = index
        self.buf = bytearray()
        self.state = CONNECTING
        self.sent_at = 0.0
        self.got = 0
        self.sent = 0
        self.seq = 0
        self.peer: dict[str, int] | None = None


class LoadGen:
    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.by_fd: dict[int, Conn] = {}
        self.conns: list[Conn] = []  # open connections, in the order they opened
        self.key = base64.b64encode(os.urandom(16)).decode()
        self.lost = 0
        # Where frames that arrive on open connections during a connect go
        # (the soak keeps checking them); None drops them.
        self.on_frames: Any = None

    # ------------------------------------------------------------ basics

    def send(self, conn: Conn, data: bytes) -> None:
        try:
            sent = conn.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.drop(conn)
            return
        if sent < len(data):  # rare with small frames: finish it blocking
            conn.sock.setblocking(True)
            try:
                conn.sock.sendall(data[sent:])
            except OSError:
                self.drop(conn)
                return
            finally:
                if conn.state != CLOSED:
                    conn.sock.setblocking(False)

    def drop(self, conn: Conn) -> None:
        if conn.state == CLOSED:
            return
        if conn.state == OPEN:
            self.lost += 1
        conn.state = CLOSED
        self.by_fd.pop(conn.fd, None)
        with contextlib.suppress(OSError, ValueError):
            self.epoll.unregister(conn.fd)
        conn.sock.close()

    def frames(self, conn: Conn) -> list[tuple[int, bytes]]:
        """Read what is there; return complete data frames (answers pings, notes closes)."""
        try:
            data = conn.sock.recv(RECV)
        except BlockingIOError:
            return []
        except OSError:
            data = b""
        if not data:
            self.drop(conn)
            return []
        buf = conn.buf
        buf += data
        got = parse(buf)
        if not got:
            return got
        out = []
        for opcode, payload in got:
            if opcode in (1, 2):
                out.append((opcode, payload))
            elif opcode == 9:
                self.send(conn, frame(payload, 10))
            elif opcode == 8:
                self.drop(conn)
        return out

    def prune(self) -> None:
        self.conns = [c for c in self.conns if c.state == OPEN]

    # ------------------------------------------------------------ commands

    def cmd_connect(
        self,
        port: int,
        start: int,
        count: int,
        objects: int,
        prefix: str,
        sources: int = 1,
        inflight: int = 256,
        host: str = "127.0.0.1",
        timeout: float = 300.0,
    ) -> dict[str, Any]:
        todo = deque(range(start, start + count))
        pending: dict[int, Conn] = {}
        errors: list[str] = []
        connected = failed = 0
        handshakes: dict[str, bytes] = {}
        began = time.monotonic()
        deadline = began + timeout
        epoll = self.epoll

        def fail(conn: Conn, why: str) -> None:
            nonlocal failed
            failed += 1
            if len(errors) < 5:
                errors.append(f"connection {conn.index}: {why}")
            pending.pop(conn.fd, None)
            conn.state = CLOSED
            with contextlib.suppress(OSError, ValueError):
                epoll.unregister(conn.fd)
            conn.sock.close()

        while (todo or pending) and time.monotonic() < deadline:
            while todo and len(pending) < inflight:
                index = todo.popleft()
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                if sources > 1:
                    sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                    sock.bind((f"127.0.0.{1 + index % sources}", 0))
                conn = Conn(sock, index)
                rc = sock.connect_ex((host, port))
                if rc not in (0, errno.EINPROGRESS):
                    fail(conn, os.strerror(rc))
                    continue
                pending[conn.fd] = conn
                epoll.register(conn.fd, EPOLLOUT)
            for fd, _ev in epoll.poll(0.5):
                conn = pending.get(fd)
                if conn is None:  # an open connection with data
                    other = self.by_fd.get(fd)
                    if other is not None:
                        got = self.frames(other)
                        if self.on_frames is not None:
                            self.on_frames(other, got)
                    continue
                if conn.state == CONNECTING:
                    err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        fail(conn, os.strerror(err))
                        continue
                    path = f"{prefix}{conn.index % objects}"
                    request = handshakes.get(path)
                    if request is None:
                        request = (
                            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                            f"Sec-WebSocket-Key: {self.key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                        ).encode()
                        if len(handshakes) < 10_000:
                            handshakes[path] = request
                    conn.sock.send(request)
                    conn.state = HANDSHAKE
                    epoll.modify(fd, EPOLLIN)
                    continue
                try:
                    data = conn.sock.recv(RECV)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    fail(conn, f"handshake: {exc}")
                    continue
                if not data:
                    fail(conn, f"closed during the handshake: {bytes(conn.buf[:100])!r}")
                    continue
                conn.buf += data
                end = conn.buf.find(b"\r\n\r\n")
                if end < 0:
                    continue
                if not conn.buf.startswith(b"HTTP/1.1 101"):
                    fail(conn, f"refused: {bytes(conn.buf[:100])!r}")
                    continue
                del conn.buf[: end + 4]
                conn.state = OPEN
                del pending[fd]
                self.by_fd[fd] = conn
                self.conns.append(conn)
                connected += 1
        for conn in list(pending.values()):
            fail(conn, "timed out")
        for _ in todo:
            failed += 1
        return {
            "connected": connected,
            "failed": failed,
            "errors": errors,
            "seconds": time.monotonic() - began,
            "open": len(self.by_fd),
        }

    def cmd_echo(self, clients: int, seconds: float, size: int = 32) -> dict[str, Any]:
        self.prune()
        active = self.conns[:clients]
        message = frame(b"e" * size)
        latencies: list[float] = []
        count = 0
        now = time.perf_counter
        for conn in active:
            conn.sent_at = now()
            self.send(conn, message)
        began = now()
        end = began + seconds
        outstanding = len(active)
        by_fd = self.by_fd
        while outstanding and now() < end + 5:
            for fd, _ev in self.epoll.poll(0.05):
                conn = by_fd.get(fd)
                if conn is None:
                    continue
                for _opcode, _payload in self.frames(conn):
                    t = now()
                    if t <= end:
                        count += 1
                        latencies.append(t - conn.sent_at)
                        conn.sent_at = t
                        self.send(conn, message)
                    else:
                        outstanding -= 1
                if conn.state == CLOSED:
                    outstanding -= 1
        latencies.sort()
        return {
            "messages": count,
            "seconds": seconds,
            "rate": count / seconds,
            "latencies": _sample(latencies, 2000),
            "lost": self.lost,
        }

    def cmd_broadcast_round(
        self, trigger: bool, size: int = 64, timeout: float = 30.0
    ) -> dict[str, Any]:
        self.prune()
        target = len(self.conns)
        for conn in self.conns:
            conn.got = 0
        got = 0
        server_seconds = None
        now = time.monotonic
        t_trigger = now()
        first = self.conns[0] if trigger else None
        if first is not None:
            self.send(first, frame(b"broadcast"))
        last = t_trigger
        deadline = t_trigger + timeout
        by_fd = self.by_fd
        while (got < target or (first is not None and server_seconds is None)) and now() < deadline:
            for fd, _ev in self.epoll.poll(0.05):
                conn = by_fd.get(fd)
                if conn is None:
                    continue
                for _opcode, payload in self.frames(conn):
                    if len(payload) == size and payload[:1] == b"b":
                        if not conn.got:
                            got += 1
                            last = now()
                        conn.got += 1
                    elif payload.startswith(b"done "):
                        server_seconds = float(payload[5:])
        return {
            "received": got,
            "expected": target,
            "t_trigger": t_trigger,
            "t_last": last,
            "server_seconds": server_seconds,
        }

    def cmd_sequential(
        self, limit: int | None = None, gap: float = 0.0, timeout: float = 5.0, size: int = 16
    ) -> dict[str, Any]:
        self.prune()
        message = frame(b"w" * size)
        latencies: list[float] = []
        missed = 0
        now = time.perf_counter
        for conn in self.conns[:limit]:
            t0 = now()
            self.send(conn, message)
            done = False
            while not done and now() - t0 < timeout:
                for fd, _ev in self.epoll.poll(timeout):
                    other = self.by_fd.get(fd)
                    if other is None:
                        continue
                    for _frame in self.frames(other):
                        if other is conn:
                            done = True
                if conn.state == CLOSED:
                    break
            if done:
                latencies.append(now() - t0)
            else:
                missed += 1
            if gap:
                time.sleep(gap)
        return {"latencies": latencies, "missed": missed}

    def cmd_storm(
        self, at: float, spread: float = 1.0, timeout: float = 30.0, size: int = 16
    ) -> dict[str, Any]:
        self.prune()
        conns = self.conns
        message = frame(b"s" * size)
        total = len(conns)
        for conn in conns:
            conn.sent_at = 0.0
            conn.got = 0
        latencies: list[float] = []
        sent = 0
        answered = 0
        now = time.monotonic
        while now() < at:
            time.sleep(min(0.01, max(0.0, at - now())))
        deadline = at + spread + timeout
        by_fd = self.by_fd
        while (sent < total or answered < total) and now() < deadline:
            t = now()
            due = total if spread <= 0 else min(total, int((t - at) / spread * total) + 1)
            while sent < due:
                conn = conns[sent]
                conn.sent_at = now()
                self.send(conn, message)
                sent += 1
            wait = 0.0005 if sent < total else 0.05
            for fd, _ev in self.epoll.poll(wait):
                conn = by_fd.get(fd)
                if conn is None:
                    continue
                for _frame in self.frames(conn):
                    if conn.sent_at and not conn.got:
                        conn.got = 1
                        answered += 1
                        latencies.append(now() - conn.sent_at)
        send_seconds = max((c.sent_at for c in conns), default=at) - at
        return {
            "sent": sent,
            "answered": answered,
            "latencies": latencies,
            "send_seconds": send_seconds,
            "lost_connections": self.lost,
        }

    def cmd_flood(self, seconds: float, size: int = 16, burst: int = 4096) -> dict[str, Any]:
        """Every open connection sends ``size``-byte messages as fast as TCP takes them.

        Echoes are read and thrown away unparsed (counted in bytes), so the
        flooders cost this process little and the server is the bottleneck.
        Afterwards the connections are dropped: what the server still has
        queued is not waited for.
        """
        self.prune()
        one = frame(b"f" * size)
        chunk = one * burst
        offset = {conn.fd: 0 for conn in self.conns}
        for conn in self.conns:
            self.epoll.modify(conn.fd, EPOLLIN | EPOLLOUT)
        sent = received = 0
        by_fd = self.by_fd
        end = time.monotonic() + seconds
        while time.monotonic() < end and by_fd:
            for fd, events in self.epoll.poll(0.05):
                conn = by_fd.get(fd)
                if conn is None:
                    continue
                if events & EPOLLIN:
                    try:
                        data = conn.sock.recv(RECV)
                    except BlockingIOError:
                        data = None
                    except OSError:
                        data = b""
                    if data == b"":
                        self.drop(conn)
                        continue
                    if data:
                        received += len(data)
                if events & EPOLLOUT:
                    start = offset[fd]
                    try:
                        n = conn.sock.send(chunk[start:] if start else chunk)
                    except BlockingIOError:
                        n = 0
                    except OSError:
                        self.drop(conn)
                        continue
                    sent += n
                    offset[fd] = (start + n) % len(chunk)
        dropped = self.lost
        self.cmd_close()
        return {
            "seconds": seconds,
            "sent_messages": sent // len(one),
            "echoed_messages": received // (size + 2),
            "dropped_by_server": dropped,
        }

    def cmd_probe(
        self,
        port: int,
        seconds: float,
        handshake_path: str,
        gap: float = 0.01,
        handshake_interval: float = 0.1,
        size: int = 16,
        timeout: float = 30.0,
        host: str = "127.0.0.1",
    ) -> dict[str, Any]:
        """A well-behaved bystander: echo round trips on the first connection, new handshakes.

        Sends one ``size``-byte message, waits for its echo, records the round
        trip, pauses ``gap`` seconds, and so on for ``seconds``; at most every
        ``handshake_interval`` seconds, between two round trips, it also opens
        a new connection to ``handshake_path`` and records the time from
        ``connect()`` to the complete 101 response (then closes it with a
        Close frame).
        """
        self.prune()
        conn = self.conns[0]
        message = frame(b"p" * size)
        request = (
            f"GET {handshake_path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {self.key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        rtts: list[float] = []
        handshakes: list[float] = []
        missed = failed_handshakes = 0
        now = time.perf_counter
        end = now() + seconds
        next_handshake = now()
        while now() < end and conn.state == OPEN:
            t0 = now()
            self.send(conn, message)
            got = False
            while not got and now() - t0 < timeout:
                for fd, _ev in self.epoll.poll(min(1.0, timeout)):
                    if fd == conn.fd and self.frames(conn):
                        got = True
                if conn.state != OPEN:
                    break
            if got:
                rtts.append(now() - t0)
            else:
                missed += 1
            if now() >= next_handshake:
                next_handshake = now() + handshake_interval
                took = _handshake(host, port, request, timeout)
                if took is None:
                    failed_handshakes += 1
                else:
                    handshakes.append(took)
            time.sleep(gap)
        return {
            "rtts": rtts,
            "missed": missed,
            "handshakes": handshakes,
            "failed_handshakes": failed_handshakes,
        }

    def cmd_close(self) -> dict[str, Any]:
        count = 0
        for conn in list(self.by_fd.values()):
            if conn.state == OPEN:
                with contextlib.suppress(OSError):
                    conn.sock.send(CLOSE_FRAME)
            conn.state = CLOSED
            self.by_fd.pop(conn.fd, None)
            with contextlib.suppress(OSError, ValueError):
                self.epoll.unregister(conn.fd)
            conn.sock.close()
            count += 1
        self.conns = []
        self.lost = 0
        return {"closed": count}

    def cmd_stats(self) -> dict[str, Any]:
        return {"open": len(self.by_fd), "lost": self.lost}

    # --------------------------------------------------------------- soak

    def cmd_soak(
        self,
        port: int,
        seconds: float,
        connections: int,
        rooms: int,
        rate: float,
        churn: float,
        prefix: str = "/room/",
        sources: int = 1,
        seed: int = 1,
    ) -> dict[str, Any]:
        """Chat traffic with churn; checks that nothing is lost or reordered.

        Every connection sends ``rate`` messages per second (``"m <id> <seq>"``)
        to its room, which relays each to every socket in the room, sender
        included. A receiver must see each sender's sequence numbers without a
        gap or a repeat from the first one it saw; the sender must get all of
        its own back. Each second ``churn`` of the connections stop sending,
        wait for their own messages to come back, and close (alternately
        with a Close frame and by dropping TCP); as many new ones connect.
        """
        rng = random.Random(seed)
        by_fd = self.by_fd
        ids = iter(range(10**9))
        stats = {
            "sent": 0,
            "received": 0,
            "relayed": 0,
            "gaps": 0,
            "reorders": 0,
            "own_missing": 0,
            "opened": 0,
            "closed": 0,
            "connect_failures": 0,
            "alarms": 0,
            "unexpected_close": 0,
        }
        errors: list[str] = []
        # conn.seq: next sequence number to send; conn.got: own messages back;
        # conn.sent_at: 0 while active, else the monotonic time draining began.

        def open_some(n: int) -> None:
            base = next(ids)
            for _ in range(n - 1):
                next(ids)
            reply = self.cmd_connect(
                port, start=base, count=n, objects=rooms, prefix=prefix, sources=sources
            )
            stats["opened"] += reply["connected"]
            stats["connect_failures"] += reply["failed"]
            errors.extend(reply["errors"][: max(0, 5 - len(errors))])

        def finish(conn: Conn, clean: bool) -> None:
            if conn.got < conn.seq:
                stats["own_missing"] += conn.seq - conn.got
                if len(errors) < 5:
                    errors.append(
                        f"connection {conn.index}: {conn.seq - conn.got} own messages missing"
                    )
            if clean:
                self.send(conn, CLOSE_FRAME)
            conn.state = CLOSED
            by_fd.pop(conn.fd, None)
            with contextlib.suppress(OSError, ValueError):
                self.epoll.unregister(conn.fd)
            conn.sock.close()
            stats["closed"] += 1

        def check(conn: Conn, got: list[tuple[int, bytes]], was_open: bool = True) -> None:
            for _opcode, payload in got:
                stats["received"] += 1
                parts = payload.split()
                if parts[:1] == [b"alarm"]:
                    stats["alarms"] += 1
                    continue
                if len(parts) != 3 or parts[0] != b"m":
                    if len(errors) < 5:
                        errors.append(f"unexpected message {payload[:60]!r}")
                    continue
                sender, seq = int(parts[1]), int(parts[2])
                peer = conn.peer
                if peer is None:
                    peer = conn.peer = {}
                expected = peer.get(sender)
                if expected is not None and seq != expected:
                    if seq > expected:
                        stats["gaps"] += 1
                    else:
                        stats["reorders"] += 1
                    if len(errors) < 5:
                        errors.append(
                            f"connection {conn.index}: from {sender} got {seq}, expected {expected}"
                        )
                peer[sender] = seq + 1
                if sender == conn.index:
                    conn.got = seq + 1
                else:
                    stats["relayed"] += 1
            if was_open and conn.state == CLOSED:
                stats["unexpected_close"] += 1
                if len(errors) < 5:
                    errors.append(f"connection {conn.index} closed by the server")

        self.on_frames = lambda conn, got: check(conn, got, True)
        open_some(connections)
        began = time.monotonic()
        end = began + seconds
        interval = 1.0 / rate
        next_send = {c.fd: began + rng.random() * interval for c in self.conns}
        next_churn = began + 1.0
        draining: list[Conn] = []
        ended = False
        flip = False
        while True:
            t = time.monotonic()
            if t >= end and not ended:
                # Stop sending; every connection waits for its own messages.
                ended = True
                for conn in self.conns:
                    if conn.state == OPEN and conn.sent_at == 0.0:
                        conn.sent_at = t
                        draining.append(conn)
            if ended and not draining:
                break
            if t >= end + 10:
                break
            # Sends due.
            if t < end:
                for conn in self.conns:
                    if (
                        conn.sent_at == 0.0
                        and conn.state == OPEN
                        and next_send.get(conn.fd, t + 1) <= t
                    ):
                        self.send(conn, frame(f"m {conn.index} {conn.seq}".encode()))
                        conn.seq += 1
                        stats["sent"] += 1
                        next_send[conn.fd] = t + interval * (0.5 + rng.random())
            # Churn: pick some to drain; replace them.
            if t >= next_churn and t < end:
                next_churn += 1.0
                active = [c for c in self.conns if c.sent_at == 0.0 and c.state == OPEN]
                k = min(len(active), max(1, int(connections * churn)))
                for conn in rng.sample(active, k):
                    conn.sent_at = t
                    draining.append(conn)
                open_some(k)
                for conn in self.conns:
                    next_send.setdefault(conn.fd, t + rng.random() * interval)
            # Drained connections close.
            still = []
            for conn in draining:
                if conn.state != OPEN:
                    continue
                if conn.got >= conn.seq or t - conn.sent_at > 5.0:
                    flip = not flip
                    next_send.pop(conn.fd, None)
                    finish(conn, clean=flip)
                else:
                    still.append(conn)
            draining = still
            for fd, _ev in self.epoll.poll(0.002):
                conn = by_fd.get(fd)
                if conn is None:
                    continue
                was_open = conn.state == OPEN
                check(conn, self.frames(conn), was_open)
        for conn in list(self.conns):
            if conn.state == OPEN:
                finish(conn, clean=True)
        self.conns = []
        self.on_frames = None
        stats["seconds"] = time.monotonic() - began
        return {"stats": stats, "errors": errors}


def _handshake(host: str, port: int, request: bytes, timeout: float) -> float | None:
    """Seconds from ``connect()`` to a complete 101 response; None if refused or too slow."""
    began = time.perf_counter()
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(request)
            answer = b""
            while b"\r\n\r\n" not in answer:
                chunk = sock.recv(4096)
                if not chunk:
                    return None
                answer += chunk
            took = time.perf_counter() - began
            if not answer.startswith(b"HTTP/1.1 101"):
                return None
            with contextlib.suppress(OSError):
                sock.sendall(CLOSE_FRAME)
            return took
    except OSError:
        return None


def _sample(values: list[float], n: int) -> list[float]:
    if len(values) <= n:
        return values
    step = len(values) / n
    return [values[int(i * step)] for i in range(n)] + [values[-1]]


def main() -> None:
    from benchmarks._common import raise_fd_limit

    raise_fd_limit(1 << 20)
    gen = LoadGen()
    print(json.dumps({"hello": os.getpid()}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        name = command.pop("cmd")
        if name == "quit":
            break
        try:
            reply = getattr(gen, f"cmd_{name}")(**command)
        except Exception as exc:  # report, keep serving
            reply = {"error": f"{name}: {type(exc).__name__}: {exc}"}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
