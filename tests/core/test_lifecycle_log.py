"""The ``trio_durable.lifecycle`` logger: one INFO line per activation, eviction and reset."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing

import trio_durable as td
from trio_durable._core import _live, _registry
from trio_durable.testing import evict

from .objects import Counter

LIFECYCLE = "trio_durable.lifecycle"


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LIFECYCLE]


async def test_an_activation_is_logged_with_the_name(
    runtime_factory: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    async with runtime_factory(objects={"counters": Counter}) as runtime:
        with caplog.at_level(logging.INFO, logger=LIFECYCLE):
            await runtime.namespace("counters").get_by_name("home").increment()
    assert lines(caplog) == ["activated counters:home"], lines(caplog)


async def test_a_unique_object_is_named_by_its_id(
    runtime_factory: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    async with runtime_factory(objects={"counters": Counter}) as runtime:
        counters = runtime.namespace("counters")
        object_id = counters.new_unique_id()
        with caplog.at_level(logging.INFO, logger=LIFECYCLE):
            await counters.get(object_id).increment()
    assert lines(caplog) == [f"activated counters:{object_id.hex[:16]}…"], lines(caplog)


async def test_hibernation_after_idling_is_logged(
    runtime_factory: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with runtime_factory(objects={"counters": Counter}) as runtime:
        await runtime.namespace("counters").get_by_name("home").increment()
        with caplog.at_level(logging.INFO, logger=LIFECYCLE):
            await trio.sleep(10)
            await trio.testing.wait_all_tasks_blocked()
    assert lines(caplog) == ["hibernated counters:home (idle for 10 s)"], lines(caplog)


async def test_a_requested_eviction_is_logged(
    runtime_factory: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    async with runtime_factory(objects={"counters": Counter}) as runtime:
        stub = runtime.namespace("counters").get_by_name("home")
        await stub.increment()
        with caplog.at_level(logging.INFO, logger=LIFECYCLE):
            assert await evict(stub) is True, "it was live"
    assert lines(caplog) == ["evicted counters:home (asked to)"], lines(caplog)


async def test_a_reset_is_logged_with_its_origin_and_reason(
    runtime_factory: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    async with runtime_factory(objects={"counters": Counter}) as runtime:
        stub = runtime.namespace("counters").get_by_name("home")
        await stub.increment()
        with caplog.at_level(logging.INFO, logger=LIFECYCLE), pytest.raises(td.ObjectResetError):
            await stub.abort_me("enough")
    (line,) = lines(caplog)
    assert line.startswith("reset counters:home (abort): ObjectResetError("), line
    assert "enough" in line, line


async def test_nothing_is_formatted_when_the_level_is_off(
    runtime_factory: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    described: list[object] = []

    def counting(object_id: td.DurableObjectId) -> str:
        described.append(object_id)
        return "described"

    monkeypatch.setattr(_live, "describe", counting)
    monkeypatch.setattr(_registry, "describe", counting)
    async with runtime_factory(objects={"counters": Counter}) as runtime:
        stub = runtime.namespace("counters").get_by_name("home")
        with caplog.at_level(logging.WARNING, logger=LIFECYCLE):
            await stub.increment()
            assert await evict(stub) is True, "it was live"
            await stub.increment()
            with pytest.raises(td.ObjectResetError):
                await stub.abort_me("quietly")
        assert described == [], "with INFO off, no line was even described"
        with caplog.at_level(logging.INFO, logger=LIFECYCLE):
            await stub.increment()
    assert len(described) == 1, "with INFO on, the activation was described"
