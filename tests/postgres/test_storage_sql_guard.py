"""The SQL guard tests of ``tests/storage/test_sql_guard.py``, on PostgreSQL."""

from ..storage.test_sql_guard import *  # noqa: F403

# It runs SQLite in a child process of its own: no backend is involved.
del test_fts3_tokenizer_cannot_crash_the_process  # noqa: F821
