"""The Python code blocks of README.md and docs/*.md are tests: see tests/docs/harness.py.

``tests.netkit.fixtures`` gives every test folder the fixtures that serve
the network test app (``echo_runtime``, ``start_server``, ``close_clients``);
``tests.postgres.fixtures`` gives every test folder (and the docs pages) the
``postgres_server`` and ``postgres_url`` fixtures of a throwaway PostgreSQL.
"""

from tests.docs.harness import sybil

pytest_plugins = ["tests.netkit.fixtures", "tests.postgres.fixtures"]

pytest_collect_file = sybil.pytest()
