"""kill -9 a real runtime process mid-write, restart it, and check nothing acknowledged is lost."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from .crash import check, kill_during_writes, verify


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_acknowledged_writes_survive_sigkill(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    acked, _alarm = kill_during_writes(tmp_path, rng)
    state = verify(tmp_path)
    total = sum(len(done) for done in acked.values())
    assert total > 0, "the writer acknowledged some writes before the kill"
    assert check(acked, state) == [], "every acknowledged write survived, none half applied"


@pytest.mark.slow
def test_repeated_kills_on_the_same_data_dir(tmp_path: Path) -> None:
    rng = random.Random(99)
    acked_all: dict[str, set[int]] = {}
    for _ in range(2):
        acked, _alarm = kill_during_writes(tmp_path, rng)
        for name, done in acked.items():
            acked_all.setdefault(name, set()).update(done)
    assert check(acked_all, verify(tmp_path)) == [], "two kills in a row lose nothing"
