"""Fixtures for the chat demo: the app served in-process by ``td.serve`` on a free port.

These tests use Trio's real clock: the ``websockets`` clients run in threads,
and a mock clock would jump while Trio waits for them. The rate limiter's
timing is tested separately, with ``autojump_clock`` and no sockets.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import attrs
import pytest
import trio

import trio_durable as td
from examples.chat import ChatConfig, make_app

#: Generous enough that only the rate-limit tests ever meet the limiter.
UNLIMITED = ChatConfig(
    rate_burst=10_000, rate_interval=0.001, session_burst=10_000, session_interval=0.001
)


@attrs.define
class ChatServer:
    runtime: td.Runtime
    port: int

    def room(self, name: str) -> td.Stub:
        return self.runtime.namespace("rooms").get_by_name(name)


StartChat = Callable[..., Awaitable[ChatServer]]


@pytest.fixture
async def start_chat(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[StartChat]:
    """``server = await start_chat(config=...)``: the chat app on 127.0.0.1, port 0."""
    stack: list[trio.CancelScope] = []

    async def start(config: ChatConfig = UNLIMITED) -> ChatServer:
        app = make_app(config)

        async def run(task_status: trio.TaskStatus[ChatServer]) -> None:
            with trio.CancelScope() as scope:
                stack.append(scope)
                data_dir = tmp_path / f"data{len(stack)}"
                async with (
                    td.open_runtime(app.objects, data_dir, env=app.env) as runtime,
                    trio.open_nursery() as inner,
                ):
                    port = await inner.start(
                        functools.partial(td.serve, runtime, app.worker, host="127.0.0.1", port=0)
                    )
                    task_status.started(ChatServer(runtime, port))

        server: ChatServer = await nursery.start(run)
        return server

    yield start
    for scope in stack:
        scope.cancel()


@pytest.fixture
async def chat(start_chat: StartChat) -> ChatServer:
    return await start_chat()
