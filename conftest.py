"""The Python code blocks of README.md and docs/*.md are tests: see tests/docs/harness.py.

``tests.netkit.fixtures`` gives every test folder the fixtures that serve
the network test app (``echo_runtime``, ``start_server``, ``close_clients``).
"""

from tests.docs.harness import sybil

pytest_plugins = ["tests.netkit.fixtures"]

pytest_collect_file = sybil.pytest()
