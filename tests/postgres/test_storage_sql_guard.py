"""The SQL guard on PostgreSQL's local copies: tests of ``tests/storage/test_sql_guard.py``.

The guard is SQLite's authorizer and does not depend on the backend, so the
whole list runs once, on SQLite. Here run the ones that matter for a copy
opened by the PostgreSQL backend: its pragmas (WAL, exclusive locking, the
size limit) must be out of reach of user SQL, transaction control must stay
the runtime's, renames and FTS5 must work and come back from PostgreSQL.
"""

from ..storage.test_sql_guard import (
    primed,
    test_fts5_index_survives_restart,
    test_rename_inside_a_rolled_back_transaction_is_undone,
    test_runtime_commits_normally_after_the_attempt,
    test_statements_outside_the_allow_list_are_refused,
    test_transaction_control_is_refused_and_changes_nothing,
)

__all__ = [
    "primed",
    "test_fts5_index_survives_restart",
    "test_rename_inside_a_rolled_back_transaction_is_undone",
    "test_runtime_commits_normally_after_the_attempt",
    "test_statements_outside_the_allow_list_are_refused",
    "test_transaction_control_is_refused_and_changes_nothing",
]
