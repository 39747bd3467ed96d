"""The key-value tests of ``tests/storage/test_kv.py``, on PostgreSQL."""

from ..storage.test_kv import *  # noqa: F403
