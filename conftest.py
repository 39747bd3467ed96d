"""The Python code blocks of README.md and docs/*.md are tests: see tests/docs/harness.py."""

from tests.docs.harness import sybil

pytest_collect_file = sybil.pytest()
