"""A program type-checked by tests/typing/test_typed_stubs.py (not imported by the suite)."""

from __future__ import annotations

import attrs

import trio_durable as td
from trio_durable.testing import run_in_object


@attrs.define(eq=False)
class Counter(td.DurableObject):
    hits: int = 0

    async def increment(self, by: int = 1) -> int:
        self.hits += by
        return self.hits


async def good(runtime: td.Runtime) -> int:
    counters = runtime.namespace("counters", Counter)
    stub = counters.get_by_name("home")
    total: int = await stub.increment(2)
    seen: int = await run_in_object(stub, lambda counter, ctx: counter.hits)
    return total + seen


async def misspelled(runtime: td.Runtime) -> None:
    stub = runtime.namespace("counters", Counter).get_by_name("home")
    await stub.incremnt()  # line 30: a misspelled method


async def wrong_argument(runtime: td.Runtime) -> None:
    stub = runtime.namespace("counters", Counter).get_by_name("home")
    await stub.increment("two")  # line 35: a str where an int is expected


async def wrong_result(runtime: td.Runtime) -> None:
    stub = runtime.namespace("counters", Counter).get_by_name("home")
    text: str = await stub.increment()  # noqa: F841  line 40: an int is not a str


async def untyped(runtime: td.Runtime) -> None:
    stub = runtime.namespace("counters").get_by_name("home")
    await stub.anything(1, 2)  # untyped namespace: not checked
