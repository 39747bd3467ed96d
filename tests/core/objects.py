"""Durable object classes shared by the core tests."""

from __future__ import annotations

from typing import Any

import attrs
import trio
import trio.lowlevel

import trio_durable as td

#: What Worker.start_slow_to_stop did, in order (RPC copies arguments, so
#: the log cannot be passed in).
slow_stop_log: list[str] = []

#: Constructor calls per class name, to see re-initialisation from outside.
constructed: dict[str, int] = {}


def count_construction(obj: object) -> None:
    name = type(obj).__name__
    constructed[name] = constructed.get(name, 0) + 1


@attrs.define(eq=False)
class Counter(td.DurableObject):
    hits: int = 0

    def __attrs_post_init__(self) -> None:
        count_construction(self)

    async def increment(self, by: int = 1) -> int:
        self.hits += by
        return self.hits

    async def echo(self, *args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return args, kwargs

    async def fail(self, message: str) -> None:
        raise KeyError(message)

    async def sleep(self, seconds: float) -> str:
        await trio.sleep(seconds)
        return "slept"

    async def sleep_forever(self) -> None:
        await trio.sleep_forever()

    async def abort_me(self, reason: str) -> str:
        self.ctx.abort(reason)
        await trio.lowlevel.checkpoint()
        return "not reached"

    async def fetch(self, request: td.Request) -> td.Response:
        if request.path == "/bad":
            return "not a response"  # type: ignore[return-value]
        return td.Response.text(f"{request.method} {request.path} hits={self.hits}")

    def sync_method(self) -> int:
        return 1

    async def _private(self) -> int:
        return 1

    async def alarm(self, info: Any) -> None:
        pass

    async def websocket_message(self, ws: Any, message: str | bytes) -> None:
        pass


@attrs.define(eq=False)
class Broken(td.DurableObject):
    def __attrs_post_init__(self) -> None:
        count_construction(self)
        raise RuntimeError("constructor failed")

    async def ping(self) -> str:
        return "pong"


@attrs.define(eq=False)
class Worker(td.DurableObject):
    """Background work via wait_until."""

    done: list[str] = attrs.field(factory=list)

    def __attrs_post_init__(self) -> None:
        count_construction(self)

    async def start(self, seconds: float, fail: bool = False) -> None:
        async def work() -> None:
            await trio.sleep(seconds)
            if fail:
                raise ValueError("background work failed")
            self.done.append("work")

        self.ctx.wait_until(work)

    async def status(self) -> list[str]:
        return list(self.done)

    async def start_slow_to_stop(self) -> None:
        """Background work whose cancellation takes a second to clean up."""
        log = slow_stop_log

        async def work() -> None:
            try:
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True):
                    await trio.sleep(1)
                log.append("old work cleaned up")

        log.append("constructed before")  # by this instance's first call
        self.ctx.wait_until(work)

    async def bcw(self, fail: bool) -> str:
        async def critical() -> str:
            await trio.sleep(1)
            if fail:
                raise OSError("critical section failed")
            return "ok"

        return await self.ctx.block_concurrency_while(critical)
