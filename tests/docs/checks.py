"""What the docs' hidden blocks check against the servers and tests the visible blocks define.

Each ``check(base_url)`` runs in a thread while the block's server runs
(see ``serve_then_check`` in :mod:`tests.docs.harness`), with clients that
are not ours: the ``websockets`` library and ``http.client``.
"""

from __future__ import annotations

import functools
import http.client
import inspect
import itertools
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import trio
import trio.testing
from websockets.sync.client import connect

import trio_durable as td

TIMEOUT = 10.0
_tests = itertools.count()


def run_test(test: Callable[..., Any], directory: Path, **fixtures: Any) -> None:
    """Run an ``async def test_...(...)`` from a page as pytest-trio would.

    The fixtures it names come from trio_durable's plugin (``runtime_factory``,
    ``durable_data_dir``) and pytest-trio (``autojump_clock``: the test runs on
    a ``MockClock`` that jumps whenever every task is blocked), or from
    ``fixtures``.
    """
    data_dir = directory / f"test-{next(_tests)}"
    data_dir.mkdir()
    clock = trio.testing.MockClock(autojump_threshold=0)

    def runtime_factory(**options: Any) -> Any:
        options.setdefault("data_dir", data_dir)
        return td.open_runtime(**options)

    available = {
        "runtime_factory": runtime_factory,
        "durable_data_dir": data_dir,
        "autojump_clock": clock,
        **fixtures,
    }
    wanted = inspect.signature(test).parameters
    missing = [name for name in wanted if name not in available]
    if missing:
        raise TypeError(f"{test.__name__} asks for fixtures the docs harness lacks: {missing}")
    arguments = {name: available[name] for name in wanted}
    uses_clock = "autojump_clock" in wanted
    trio.run(functools.partial(test, **arguments), clock=clock if uses_clock else None)


def _ws_url(base_url: str, path: str) -> str:
    return base_url.replace("http://", "ws://", 1) + path


def room_broadcasts(base_url: str) -> None:
    """The websockets.md chat room: two members, one message, everyone gets it."""
    options: dict[str, Any] = {"open_timeout": TIMEOUT, "close_timeout": 1, "proxy": None}
    with (
        connect(_ws_url(base_url, "/?name=ann"), **options) as ann,
        connect(_ws_url(base_url, "/?name=bob"), **options) as bob,
    ):
        ann.send("hi")
        assert ann.recv(TIMEOUT) == "ann: hi"
        assert bob.recv(TIMEOUT) == "ann: hi"
    # (websocket_close then tells the room; nobody is left to hear it.)


def chat_page(base_url: str) -> None:
    """The chat app (getting-started.md): the page is served."""
    with urllib.request.urlopen(base_url + "/", timeout=TIMEOUT) as response:
        assert response.status == 200
        assert b"<title>Chat" in response.read()


def _upgrade(base_url: str, path: str, origin: str) -> tuple[int, bytes]:
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=TIMEOUT)
    try:
        connection.request(
            "GET",
            path,
            headers={
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                "Origin": origin,
            },
        )
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def origin_and_token(base_url: str) -> None:
    """faults.md: the origin allow-list, then ``authenticate``, then the worker."""
    status, _ = _upgrade(base_url, "/?token=good", "https://evil.example")
    assert status == 403, f"a foreign origin is refused before anything else, got {status}"
    status, body = _upgrade(base_url, "/?token=bad", "https://chat.example")
    assert (status, body) == (401, b"a valid token is required"), (status, body)
    status, body = _upgrade(base_url, "/?token=good", "https://chat.example")
    assert (status, body) == (200, b"the worker ran"), (status, body)


class Tokens:
    """A stand-in token store for faults.md: one valid token, ``good``."""

    async def is_valid(self, token: str | None) -> bool:
        await trio.lowlevel.checkpoint()
        return token == "good"


def config_examples(page: str) -> None:
    """cli.md: its config files (```toml blocks) are read as ``serve`` and ``dev`` read them.

    Each block is written to a fresh directory (a ``pyproject.toml`` when it
    is a ``[tool.trio-durable]`` table), with the certificate files it names,
    and resolved by the command's own code: every key is known, every value
    accepted by the record that owns it, the TLS context loads, and the
    ``[dev]`` table wins for ``dev`` only.
    """
    import os
    import re
    import tempfile
    import tomllib

    import trustme

    from trio_durable._cli import _build_parser
    from trio_durable._cli._options import resolve

    root = Path(__file__).resolve().parents[2]
    blocks = re.findall(r"```toml\n(.*?)```", (root / page).read_text(), re.DOTALL)
    assert len(blocks) >= 2, f"{page} shows a trio-durable.toml and a pyproject.toml"
    here = os.getcwd()
    for block in blocks:
        document = tomllib.loads(block)
        table = document.get("tool", {}).get("trio-durable", document)
        with tempfile.TemporaryDirectory() as directory:
            name = "pyproject.toml" if "tool" in document else "trio-durable.toml"
            (Path(directory) / name).write_text(block)
            authority = trustme.CA()
            issued = authority.issue_cert("localhost")
            for key, pem in (
                ("ssl_certfile", issued.cert_chain_pems[0]),
                ("ssl_keyfile", issued.private_key_pem),
            ):
                if key in table:
                    path = Path(directory) / table[key]
                    path.parent.mkdir(parents=True, exist_ok=True)
                    pem.write_to_path(str(path))
            os.chdir(directory)
            try:
                serve = resolve("serve", _build_parser().parse_args(["serve"]))
                dev = resolve("dev", _build_parser().parse_args(["dev"]))
                if serve["ssl_certfile"] is not None:
                    assert serve.ssl_context() is not None, "the certificate loads"
            finally:
                os.chdir(here)
        dev_table = table.get("dev", {})
        for key, value in table.items():
            if key == "dev" or (isinstance(value, str) and value == "none"):
                continue
            expected = dev_table.get(key, value)
            name = key.replace("-", "_")
            if name in ("data_dir", "ssl_certfile", "ssl_keyfile"):
                continue  # made absolute (relative to the file)
            assert serve[name] == value, (name, serve[name], value)
            if expected != "none":
                assert dev[name] == expected, (name, dev[name], expected)
