"""kill -9 of a node on PostgreSQL loses nothing it acknowledged, SQL included.

The writer of ``tests/storage/crash_child.py`` runs in a child process with
``database=`` the test's database: transactional key-value writes and an SQL
insert per call, an alarm pending. It is killed with SIGKILL at a random
moment, then another process (a node that never had the objects) opens the
same database and checks.
"""

from __future__ import annotations

import random

import pytest

from ..storage.crash import check, kill_during_writes, verify


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2))
def test_acknowledged_writes_survive_sigkill_of_the_node(postgres_url: str, seed: int) -> None:
    acked, _alarm = kill_during_writes(postgres_url, random.Random(seed))
    state = verify(postgres_url)
    assert sum(len(done) for done in acked.values()) > 0, "some writes were acknowledged"
    assert check(acked, state, sql_atomic=True) == [], (
        "every acknowledged write is there, SQL rows and keys together, none half applied"
    )


@pytest.mark.slow
def test_a_node_killed_twice_in_a_row_loses_nothing(postgres_url: str) -> None:
    rng = random.Random(7)
    acked_all: dict[str, set[int]] = {}
    for _ in range(2):
        acked, _alarm = kill_during_writes(postgres_url, rng)
        for name, done in acked.items():
            acked_all.setdefault(name, set()).update(done)
    assert check(acked_all, verify(postgres_url), sql_atomic=True) == [], "two kills lose nothing"
