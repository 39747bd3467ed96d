from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import trio_durable as td

from . import netapp
from .netclient import close_clients as close_clients
from .netclient import start_server as start_server
from .objects import constructed


@pytest.fixture(autouse=True)
def _reset_records() -> None:
    constructed.clear()
    netapp.reset_records()


@pytest.fixture
async def echo_runtime() -> AsyncIterator[td.Runtime]:
    """A runtime (in memory) serving :class:`netapp.Echo` objects."""
    async with td.open_runtime(netapp.OBJECTS) as runtime:
        yield runtime
