from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import trio_durable as td

from .objects import OBJECTS


@pytest.fixture
async def runtime(runtime_factory: Callable[..., Any]) -> AsyncIterator[td.Runtime]:
    async with runtime_factory(objects=OBJECTS) as rt:
        yield rt


@pytest.fixture
def box(runtime: td.Runtime) -> td.Stub:
    return runtime.namespace("boxes").get_by_name("box-1")
