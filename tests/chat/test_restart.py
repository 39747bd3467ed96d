"""History survives a restart of the server process (the real command, SIGTERM between)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from websockets.sync.client import connect

from .helpers import cli_server, stop

UNLIMITED = {
    "CHAT_RATE_BURST": "1000",
    "CHAT_RATE_INTERVAL": "0.001",
    "CHAT_SESSION_BURST": "1000",
    "CHAT_SESSION_INTERVAL": "0.001",
}


def ws_url(url: str, room: str) -> str:
    return url.replace("http://", "ws://") + f"/api/room/{room}/websocket"


def test_backlog_of_100_after_a_restart(tmp_path: Path) -> None:
    with cli_server(tmp_path, env=UNLIMITED) as (process, url):
        with connect(ws_url(url, "lobby"), proxy=None) as ada:
            ada.send(json.dumps({"name": "ada"}))
            assert json.loads(ada.recv(5)) == {"joined": "ada"}
            assert json.loads(ada.recv(5)) == {"ready": True}
            for i in range(120):
                ada.send(json.dumps({"message": f"m{i}"}))
            sent = [json.loads(ada.recv(5)) for _ in range(120)]
        code, _ = stop(process, signal.SIGTERM)
        assert code == 0, code

    with (
        cli_server(tmp_path, env=UNLIMITED) as (_, url),
        connect(ws_url(url, "lobby"), proxy=None) as bob,
    ):
        bob.send(json.dumps({"name": "bob"}))
        backlog = []
        while (message := json.loads(bob.recv(5))) != {"ready": True}:
            backlog.append(message)
        assert backlog[-1] == {"joined": "bob"}, "nobody else is present after the restart"
        assert backlog[:-1] == sent[20:], "the last 100 messages, exactly as first sent"
        bob.send(json.dumps({"message": "after restart"}))
        after = json.loads(bob.recv(5))
        assert after["timestamp"] > sent[-1]["timestamp"], "timestamps go on increasing"
