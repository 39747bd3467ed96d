"""The limit tests of ``tests/storage/test_limits.py``, on PostgreSQL."""

from ..storage.test_limits import *  # noqa: F403
