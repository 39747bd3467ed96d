"""Typed namespaces give stubs that mypy checks: methods, arguments, results."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

import trio_durable as td

APP = Path(__file__).with_name("typed_app.py")


@pytest.fixture(scope="module")
def mypy_errors() -> dict[int, str]:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(APP)],
        capture_output=True,
        text=True,
        check=False,
    )
    errors: dict[int, str] = {}
    for line in result.stdout.splitlines():
        match = re.search(r"typed_app\.py:(\d+): error: (.*)", line)
        if match:
            errors[int(match[1])] = match[2]
    return errors


@pytest.mark.slow
def test_a_misspelled_method_is_a_type_error(mypy_errors: dict[int, str]) -> None:
    assert "incremnt" in mypy_errors.get(30, ""), mypy_errors


@pytest.mark.slow
def test_a_wrong_argument_type_is_a_type_error(mypy_errors: dict[int, str]) -> None:
    assert "increment" in mypy_errors.get(35, "") and "str" in mypy_errors[35], mypy_errors


@pytest.mark.slow
def test_a_wrong_result_type_is_a_type_error(mypy_errors: dict[int, str]) -> None:
    assert "int" in mypy_errors.get(40, ""), mypy_errors


@pytest.mark.slow
def test_correct_and_untyped_uses_pass(mypy_errors: dict[int, str]) -> None:
    assert set(mypy_errors) == {30, 35, 40}, mypy_errors


@attrs.define(eq=False)
class Counter(td.DurableObject):
    async def ping(self) -> str:
        return "pong"


@attrs.define(eq=False)
class Other(td.DurableObject):
    pass


async def test_a_typed_namespace_is_the_same_namespace_at_run_time() -> None:
    async with td.open_runtime({"counters": Counter}) as runtime:
        typed = runtime.namespace("counters", Counter)
        assert typed is runtime.namespace("counters")
        assert await typed.get_by_name("x").ping() == "pong"


async def test_asking_for_the_wrong_class_is_a_clear_error() -> None:
    async with td.open_runtime({"counters": Counter}) as runtime:
        with pytest.raises(TypeError, match="serves Counter, not 'Other'"):
            runtime.namespace("counters", Other)
