"""``trio-durable new NAME``: the scaffold's own tests pass right after creation."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from trio_durable._cli import main

from .helpers import WAIT, Command, environment, one_line_error, run


@pytest.mark.slow
def test_scaffold_tests_pass_and_it_serves(tmp_path: Path) -> None:
    result = run("new", "my-counter", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    project = tmp_path / "my-counter"
    assert "cd my-counter && python -m trio_durable serve my_counter:app" in result.stdout
    assert sorted(p.relative_to(project).as_posix() for p in project.rglob("*")) == [
        ".gitignore",
        "README.md",
        "my_counter.py",
        "pyproject.toml",
        "tests",
        "tests/__init__.py",
        "tests/test_my_counter.py",
    ]

    # The project's own settings, not ours: run from its directory.
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error"],
        cwd=project,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "5 passed" in tests.stdout, tests.stdout

    server = Command("serve", "my_counter:app", "--port", "0", cwd=project)
    try:
        base = server.wait_for(r"serving my_counter:app on (http://\S+)").group(1)
        request = urllib.request.Request(base + "/counter/hello", method="POST")
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            assert json.loads(response.read()) == {"count": 1}
        assert server.stop() == 0, server.lines
    finally:
        server.kill()


def test_scaffold_readme_has_the_commands_to_run_and_test(tmp_path: Path) -> None:
    assert run("new", "shop", cwd=tmp_path).returncode == 0
    readme = (tmp_path / "shop" / "README.md").read_text()
    assert "python -m trio_durable serve shop:app" in readme, readme
    assert "python -m pytest" in readme, readme
    pyproject = (tmp_path / "shop" / "pyproject.toml").read_text()
    assert "trio_mode = true" in pyproject, pyproject


def test_an_existing_empty_directory_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "shop").mkdir()
    monkeypatch.chdir(tmp_path)
    assert main(["new", "shop"]) == 0
    assert (tmp_path / "shop" / "shop.py").exists()


def test_refuses_a_non_empty_directory_and_leaves_it_alone(tmp_path: Path) -> None:
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "notes.txt").write_text("mine")
    line = one_line_error(run("new", "shop", cwd=tmp_path))  # the real command, once
    assert "already exists and is a non-empty directory" in line, line
    assert [p.name for p in (tmp_path / "shop").iterdir()] == ["notes.txt"]


def refused(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> str:
    monkeypatch.chdir(tmp_path)
    assert main(["new", name]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert captured.out == "" and len(lines) == 1, captured
    assert lines[0].startswith("trio-durable: error: "), lines
    return lines[0]


def test_refuses_an_existing_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "shop").write_text("")
    line = refused("shop", tmp_path, monkeypatch, capsys)
    assert "already exists and is a non-empty file" in line, line


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("1shop", "use a letter, then letters, digits, '-' or '_'"),
        ("my shop", "use a letter, then letters, digits, '-' or '_'"),
        ("../shop", "use a letter, then letters, digits, '-' or '_'"),
        ("", "use a letter, then letters, digits, '-' or '_'"),
        ("class", "'class' is a Python keyword"),
        ("json", "would shadow the installed module"),
        ("trio", "would shadow the installed module"),
    ],
)
def test_refuses_an_invalid_name(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    problem: str,
) -> None:
    line = refused(name, tmp_path, monkeypatch, capsys)
    assert f"invalid project name {name!r}" in line and problem in line, line
    assert list(tmp_path.iterdir()) == [], "nothing was created"
