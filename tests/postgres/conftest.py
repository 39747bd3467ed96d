"""The storage tests' fixtures, with every runtime on a real PostgreSQL database.

``runtime_factory`` opens runtimes with ``database=`` the test's own (empty)
database, so a test written for the SQLite backend (``tests/storage``) runs
here unchanged: calling it twice in one test reopens the same data.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import trio_durable as td

from ..storage.objects import OBJECTS

Factory = Callable[..., contextlib.AbstractAsyncContextManager[Any]]


@pytest.fixture
def runtime_factory(postgres_url: str) -> Factory:
    """``runtime_factory(objects=..., **options)`` → ``open_runtime`` on the test's database."""

    def factory(**options: Any) -> contextlib.AbstractAsyncContextManager[Any]:
        if "data_dir" not in options and "backend" not in options:
            options.setdefault("database", postgres_url)
        return td.open_runtime(**options)

    return factory


@pytest.fixture
async def runtime(runtime_factory: Factory) -> AsyncIterator[td.Runtime]:
    async with runtime_factory(objects=OBJECTS) as rt:
        yield rt


@pytest.fixture
def box(runtime: td.Runtime) -> td.Stub:
    return runtime.namespace("boxes").get_by_name("box-1")
