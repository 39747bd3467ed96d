"""The transaction tests of ``tests/storage/test_transaction.py``, on PostgreSQL."""

from ..storage.test_transaction import *  # noqa: F403
