"""pytest plugin: fixtures for testing durable objects.

Registered through the ``pytest11`` entry point, so installing trio_durable
makes these fixtures available everywhere:

``durable_data_dir``
    A fresh, empty data directory for the test (under ``tmp_path``).

``runtime_factory``
    Opens runtimes on that data directory:
    ``async with runtime_factory(objects={...}) as runtime: ...``. Calling it
    twice in one test reopens the same data, which is how restarts are tested.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .._runtime import open_runtime

__all__ = ["durable_data_dir", "runtime_factory"]


@pytest.fixture
def durable_data_dir(tmp_path: Path) -> Path:
    """A fresh data directory for one test."""
    path = tmp_path / "durable-data"
    path.mkdir()
    return path


@pytest.fixture
def runtime_factory(
    durable_data_dir: Path,
) -> Callable[..., contextlib.AbstractAsyncContextManager[Any]]:
    """``runtime_factory(objects=..., **options)`` → ``open_runtime`` on the test's data dir."""

    def factory(**options: Any) -> contextlib.AbstractAsyncContextManager[Any]:
        options.setdefault("data_dir", durable_data_dir)
        return open_runtime(**options)

    return factory
