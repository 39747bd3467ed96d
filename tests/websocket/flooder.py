"""Flooding WebSocket clients in a process of their own (for the fairness tests).

``python -m tests.websocket.flooder PORT PATH CONNECTIONS`` opens
CONNECTIONS WebSockets to PATH and on each sends 16-byte text messages as
fast as TCP takes them, reading and throwing away the echoes (one
non-blocking ``select`` loop for all of them). It prints ``ready`` once
echoes come back on every connection (the server is flooded now) and goes
on until a line (or EOF) arrives on its stdin; then it prints one JSON line,
``{"echoed": <messages read back>, "closed_by_server": <connections the
server closed>}``, and exits.

A separate process, so that the flood does not wait for the server's event
loop to be sent, as real flooders would not. Frames are built by hand
(masked with an all-zero key, valid per RFC 6455), independent of our codec.
"""

from __future__ import annotations

import base64
import json
import os
import selectors
import socket
import sys
import time

PAYLOAD = b"f" * 16
# A masked text frame with an all-zero key: the payload goes as it is.
FRAME = bytes((0x81, 0x80 | len(PAYLOAD))) + b"\0\0\0\0" + PAYLOAD
BURST = FRAME * 4096
# What the server sends back per message: an unmasked frame.
ECHO_SIZE = 2 + len(PAYLOAD)
# Echoes a connection must get back before the flood counts as started.
STARTED = 100 * ECHO_SIZE


def open_connection(port: int, path: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise SystemExit(f"closed during the handshake: {head!r}")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise SystemExit(f"refused: {head!r}")
    sock.setblocking(False)
    return sock


def main() -> None:
    port, path, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    socks = [open_connection(port, path) for _ in range(count)]
    received = dict.fromkeys(socks, 0)
    offset = dict.fromkeys(socks, 0)
    closed = 0
    selector = selectors.DefaultSelector()
    for sock in socks:
        selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
    selector.register(sys.stdin, selectors.EVENT_READ)
    started = False
    give_up = time.monotonic() + 60
    while True:
        events_ready = selector.select(0.05)
        if any(key.fileobj is sys.stdin for key, _ in events_ready):
            break
        for key, events in events_ready:
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                if events & selectors.EVENT_READ:
                    data = sock.recv(65536)
                    if not data:
                        raise ConnectionResetError
                    received[sock] += len(data)
                if events & selectors.EVENT_WRITE:
                    start = offset[sock]
                    sent = sock.send(BURST[start:] if start else BURST)
                    offset[sock] = (start + sent) % len(BURST)
            except BlockingIOError:
                pass
            except OSError:
                selector.unregister(sock)
                closed += 1
        if not started and all(n >= STARTED for n in received.values()):
            print("ready", flush=True)
            started = True
        elif not started and time.monotonic() > give_up:
            raise SystemExit("a flooding connection got no echo within 60 s")
    echoed = sum(received.values()) // ECHO_SIZE
    print(json.dumps({"echoed": echoed, "closed_by_server": closed}), flush=True)
    for sock in socks:
        sock.close()


if __name__ == "__main__":
    main()
