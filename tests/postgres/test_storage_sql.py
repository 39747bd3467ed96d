"""The SQL API tests of ``tests/storage/test_sql.py``, on PostgreSQL."""

from ..storage.test_sql import *  # noqa: F403
