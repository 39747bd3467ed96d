"""The testing section of docs/lifecycle.md, followed to the letter in a fresh project.

Its ``pyproject.toml`` lines and its test file are copied into an empty
directory and pytest runs there in a subprocess, with that directory's
settings only: what a reader who copies the page gets. Without the
settings the same file fails, which is why the page shows them.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.helpers import WAIT, environment

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def lifecycle_testing_section() -> tuple[str, str]:
    """(the toml block, the first Python block) of lifecycle.md's "## Testing"."""
    page = (ROOT / "docs" / "lifecycle.md").read_text()
    section = page.split("\n## Testing\n", 1)[1].split("\n## ", 1)[0]
    (toml,) = re.findall(r"^```toml\n(.*?)^```$", section, re.DOTALL | re.MULTILINE)
    python = re.findall(r"^```python\n(.*?)^```$", section, re.DOTALL | re.MULTILINE)
    return toml, python[0]


def pytest_in(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error"],
        cwd=directory,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )


def test_the_page_s_setup_and_tests_pass_in_a_fresh_project(tmp_path: Path) -> None:
    toml, tests = lifecycle_testing_section()
    (tmp_path / "pyproject.toml").write_text(toml)
    (tmp_path / "test_counter.py").write_text(tests)
    result = pytest_in(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b2 passed\b", result.stdout), result.stdout


def test_without_the_settings_async_tests_do_not_run(tmp_path: Path) -> None:
    _, tests = lifecycle_testing_section()
    (tmp_path / "pyproject.toml").write_text("[tool.pytest.ini_options]\n")
    (tmp_path / "test_counter.py").write_text(tests)
    result = pytest_in(tmp_path)
    assert result.returncode != 0, result.stdout
    assert "async def functions are not natively supported" in result.stdout, result.stdout
