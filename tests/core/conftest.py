from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import trio_durable as td

from .objects import Broken, Counter, Worker, constructed

OBJECTS = {"counters": Counter, "broken": Broken, "workers": Worker}


@pytest.fixture(autouse=True)
def _reset_construction_counts() -> None:
    constructed.clear()


@pytest.fixture
async def runtime(runtime_factory) -> AsyncIterator[td.Runtime]:  # type: ignore[no-untyped-def]
    async with runtime_factory(objects=OBJECTS) as rt:
        yield rt
