from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import trio_durable as td

from .objects import Room, Standard, constructed, events


@pytest.fixture(autouse=True)
def _clear_logs() -> None:
    constructed.clear()
    events.clear()


@pytest.fixture
async def runtime(runtime_factory) -> AsyncIterator[td.Runtime]:  # type: ignore[no-untyped-def]
    async with runtime_factory(objects={"rooms": Room, "standard": Standard}) as rt:
        yield rt
