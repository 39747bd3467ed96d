from __future__ import annotations

import pytest

from .objects import constructed


@pytest.fixture(autouse=True)
def _reset_construction_counts() -> None:
    constructed.clear()
