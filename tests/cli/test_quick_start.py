"""The guards of ``.ci/quick_start.py``: ``python`` is the fresh venv's, CI's install stays put.

The whole check (an install from PyPI) runs in ``.ci/run``; here only its
guards run, on a venv made without pip (fast, nothing downloaded, nothing
installed anywhere).
"""

from __future__ import annotations

import importlib.util
import sys
import venv
from pathlib import Path
from types import ModuleType

import pytest

import trio_durable

ROOT = Path(__file__).resolve().parents[2]


def load_quick_start() -> ModuleType:
    spec = importlib.util.spec_from_file_location("quick_start", ROOT / ".ci" / "quick_start.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_python_on_the_newcomer_path_is_the_venv(tmp_path: Path) -> None:
    quick_start = load_quick_start()
    venv_dir = tmp_path / "venv"
    venv.create(venv_dir, with_pip=False)
    env = quick_start.newcomer_environment(tmp_path / "shims", venv_dir)
    quick_start.check_python_is_the_venv(env, venv_dir)  # passes: no SystemExit
    # In that venv (no pip, nothing installed) trio_durable is not importable:
    # the CI interpreter's packages are not visible through the shim.
    assert quick_start.installed_location("python", env=env).startswith("(no trio_durable")


def test_a_symlink_to_the_venv_python_is_refused(tmp_path: Path) -> None:
    # The old shim: Python looks for pyvenv.cfg next to the symlink, not next to
    # its target, so this starts the base interpreter with its site-packages.
    quick_start = load_quick_start()
    venv_dir = tmp_path / "venv"
    venv.create(venv_dir, with_pip=False)
    env = quick_start.newcomer_environment(tmp_path / "shims", venv_dir)
    shim = tmp_path / "shims" / "python"
    shim.unlink()
    shim.symlink_to(venv_dir / "bin" / "python")
    with pytest.raises(SystemExit, match="not the fresh virtualenv"):
        quick_start.check_python_is_the_venv(env, venv_dir)


def test_another_venv_is_refused(tmp_path: Path) -> None:
    quick_start = load_quick_start()
    venv.create(tmp_path / "one", with_pip=False)
    venv.create(tmp_path / "other", with_pip=False)
    env = quick_start.newcomer_environment(tmp_path / "shims", tmp_path / "other")
    with pytest.raises(SystemExit, match="not the fresh virtualenv"):
        quick_start.check_python_is_the_venv(env, tmp_path / "one")


def test_installed_location_is_where_this_interpreter_imports_from() -> None:
    quick_start = load_quick_start()
    assert quick_start.installed_location(sys.executable) == trio_durable.__file__


def test_the_shim_does_not_put_pip_settings_or_the_venv_bin_in_reach(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_TARGET", "/somewhere/else")
    monkeypatch.setenv("VIRTUAL_ENV", "/another/venv")
    quick_start = load_quick_start()
    venv_dir = tmp_path / "venv"
    env = quick_start.newcomer_environment(tmp_path / "shims", venv_dir)
    assert "PIP_TARGET" not in env and "VIRTUAL_ENV" not in env
    assert str(venv_dir / "bin") not in env["PATH"].split(":")
