"""Fixtures for tests that serve the network test app over real sockets (a pytest plugin).

Registered for the whole suite by the root ``conftest.py``.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import trio

import trio_durable as td
from trio_durable._gateway._serve import Worker, serve

from . import netapp
from .netclient import OPEN_STREAMS


@pytest.fixture(autouse=True)
def _reset_network_records() -> None:
    netapp.reset_records()


@pytest.fixture
async def echo_runtime() -> AsyncIterator[td.Runtime]:
    """A runtime (in memory) serving :class:`netapp.Echo` objects."""
    async with td.open_runtime(netapp.OBJECTS) as runtime:
        yield runtime


@pytest.fixture
async def close_clients() -> AsyncIterator[None]:
    """Close the raw clients a test left open (no ResourceWarning)."""
    yield
    while OPEN_STREAMS:
        await OPEN_STREAMS.pop().aclose()


@pytest.fixture
def start_server(nursery: trio.Nursery) -> Callable[..., Awaitable[int]]:
    """``port = await start_server(runtime, worker, **serve_options)`` on 127.0.0.1:0."""

    async def start(runtime: td.Runtime, worker: Worker, **options: Any) -> int:
        options.setdefault("handshake_timeout", 2.0)
        port: int = await nursery.start(
            functools.partial(serve, runtime, worker, host="127.0.0.1", port=0, **options)
        )
        return port

    return start
