"""``trio_durable.testing.run_in_object`` takes async and plain functions alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import trio

import trio_durable as td
from trio_durable.testing import run_in_object


@attrs.define(eq=False)
class Box(td.DurableObject):
    hits: int = 0

    async def hit(self) -> int:
        self.hits += 1
        return self.hits


@pytest.fixture
async def box(runtime_factory: Any) -> AsyncIterator[td.Stub]:
    async with runtime_factory(objects={"boxes": Box}) as runtime:
        yield runtime.namespace("boxes").get_by_name("a")


async def test_an_async_function_runs_inside_the_live_instance(box: td.Stub) -> None:
    await box.hit()

    async def read(instance: Box, ctx: td.ObjectContext) -> tuple[int, str | None]:
        await trio.lowlevel.checkpoint()
        return instance.hits, ctx.id.name

    assert await run_in_object(box, read) == (1, "a")


async def test_a_plain_function_runs_inside_the_live_instance(box: td.Stub) -> None:
    await box.hit()

    def read(instance: Box, ctx: td.ObjectContext) -> tuple[int, str | None]:
        return instance.hits, ctx.id.name

    assert await run_in_object(box, read) == (1, "a")


async def test_a_lambda_returning_an_awaitable_has_it_awaited(box: td.Stub) -> None:
    await run_in_object(box, lambda instance, ctx: ctx.storage.put("k", 7))
    assert await run_in_object(box, lambda instance, ctx: ctx.storage.get("k")) == 7


async def test_a_plain_function_s_exception_keeps_its_type(box: td.Stub) -> None:
    def fail(instance: Box, ctx: td.ObjectContext) -> None:
        raise LookupError("from inside")

    with pytest.raises(LookupError, match="from inside"):
        await run_in_object(box, fail)
    assert await box.hit() == 1, "an exception in fn is not a reset"


@pytest.mark.parametrize("not_a_function", [None, 42, "read"])
async def test_not_callable_is_a_clear_type_error(box: td.Stub, not_a_function: Any) -> None:
    with pytest.raises(TypeError, match=r"run_in_object\(\) needs a function fn\(instance, ctx\)"):
        await run_in_object(box, not_a_function)
