"""The alarm tests of ``tests/storage/test_alarms.py``, on PostgreSQL."""

from ..storage.test_alarms import *  # noqa: F403
