from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import trio_durable as td

from ..faults import netapp
from ..faults.netclient import close_clients as close_clients
from ..faults.netclient import start_server as start_server


@pytest.fixture(autouse=True)
def _reset_records() -> None:
    netapp.reset_records()


@pytest.fixture
async def echo_runtime() -> AsyncIterator[td.Runtime]:
    async with td.open_runtime(netapp.OBJECTS) as runtime:
        yield runtime
