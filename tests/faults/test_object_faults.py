"""Object code that raises or blocks: only the faulty object pays for it.

The blocking tests really block the event loop (``time.sleep``), since that
is the fault; thresholds are a few hundredths of a second so that each test
stays short. The watchdog measures real time, so they work the same with or
without ``autojump_clock``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing

import trio_durable as td
from trio_durable.testing import open_websocket

from .objects import OBJECTS, block_loop, constructed

Factory = Callable[..., Any]
WATCHDOG_LOGGER = "trio_durable"


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == WATCHDOG_LOGGER
        and record.levelno == logging.WARNING
        and "event loop" in record.getMessage()
    ]


# ----------------------------------------------------------------- raising


async def test_constructor_error_reaches_the_caller_and_neighbours_keep_serving(
    runtime_factory: Factory, autojump_clock: trio.testing.MockClock
) -> None:
    async with runtime_factory(objects=OBJECTS) as runtime:
        ns = runtime.namespace("fragile")
        good = ns.get_by_name("good")
        assert await good.hit() == 1
        with pytest.raises(LookupError, match="constructor of bad-ctor failed"):
            await ns.get_by_name("bad-ctor").hit()
        with pytest.raises(LookupError):
            await ns.get_by_name("bad-ctor").hit()
        assert await good.hit() == 2, "the neighbour kept its instance and its state"
        assert constructed == {"good": 1, "bad-ctor": 2}, "each call tries a fresh constructor"
        stats = runtime.statistics()
        assert (stats.resets, stats.live_objects) == (2, 1), stats


async def test_handler_error_reaches_the_caller_and_the_object_lives_on(
    runtime_factory: Factory,
) -> None:
    async with runtime_factory(objects=OBJECTS) as runtime:
        stub = runtime.namespace("fragile").get_by_name("a")
        assert await stub.hit() == 1
        with pytest.raises(KeyError, match="handler failed on purpose"):
            await stub.fail()
        assert await stub.hit() == 2, "a handler error is not a reset"
        assert runtime.statistics().resets == 0


async def test_websocket_handler_error_is_logged_and_the_socket_stays_open(
    runtime_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    async with runtime_factory(objects=OBJECTS) as runtime:
        stub = runtime.namespace("fragile").get_by_name("ws")
        async with open_websocket(stub) as ws:
            await ws.send("a")
            assert await ws.receive() == "a #1"
            with caplog.at_level(logging.WARNING, logger="trio_durable.websocket"):
                await ws.send("raise")
                await ws.send("b")
                assert await ws.receive() == "b #2", "same instance, same socket"
        assert "websocket_message failed on purpose" in caplog.text, caplog.text
        assert runtime.statistics().resets == 0


async def test_wait_until_failure_resets_only_that_object(
    runtime_factory: Factory,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with runtime_factory(objects=OBJECTS) as runtime:
        ns = runtime.namespace("fragile")
        faulty, neighbour = ns.get_by_name("faulty"), ns.get_by_name("neighbour")
        await faulty.hit()
        await neighbour.hit()
        await faulty.start_work("fail")
        await trio.sleep(2)
        await trio.testing.wait_all_tasks_blocked()
        assert runtime.statistics().resets == 1, "the failed work reset its object"
        assert await faulty.hit() == 1, "the faulty object starts afresh"
        assert await neighbour.hit() == 2, "the neighbour kept its state"
    assert "background work" in caplog.text and faulty.id.hex in caplog.text, caplog.text


# ---------------------------------------------------------------- blocking


async def test_blocking_handler_is_logged_with_object_handler_and_line(
    runtime_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    async with runtime_factory(
        objects=OBJECTS, blocking_warning_after=0.05, blocking_reset_after=None
    ) as runtime:
        stub = runtime.namespace("fragile").get_by_name("sleepy")
        with caplog.at_level(logging.WARNING, logger=WATCHDOG_LOGGER):
            assert await stub.block(0.12) == 1
            await trio.lowlevel.checkpoint()  # the blocking step ends here
        assert await stub.hit() == 2, "below the reset limit the object keeps its state"
        assert runtime.statistics().resets == 0
    [message] = warnings_of(caplog)
    assert "fragile:'sleepy'" in message, message
    assert "Fragile.block" in message, message
    assert "objects.py:" in message, "the line of the blocking code is given"
    assert "the limit is 0.050 s (blocking_warning_after)" in message, message


async def test_blocking_past_the_reset_limit_resets_only_that_object(
    runtime_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    async with runtime_factory(
        objects=OBJECTS, blocking_warning_after=0.03, blocking_reset_after=0.08
    ) as runtime:
        ns = runtime.namespace("fragile")
        blocker, neighbour = ns.get_by_name("blocker"), ns.get_by_name("neighbour")
        assert await neighbour.hit() == 1
        with caplog.at_level(logging.WARNING, logger=WATCHDOG_LOGGER):
            assert await blocker.block(0.15) == 1, "the reply was already on its way"
            await trio.lowlevel.checkpoint()
        await trio.testing.wait_all_tasks_blocked()
        assert runtime.statistics().resets == 1
        assert runtime.watchdog is not None and runtime.watchdog.resets == 1
        assert await blocker.hit() == 1, "the blocker was reset: a fresh instance"
        assert await neighbour.hit() == 2, "the neighbour kept its state"
    [message] = warnings_of(caplog)
    assert "fragile:'blocker' in Fragile.block" in message, message
    assert "(blocking_reset_after); resetting the object" in message, message


async def test_blocking_after_an_await_names_the_handler_not_the_helper(
    runtime_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    async with runtime_factory(
        objects=OBJECTS, blocking_warning_after=0.05, blocking_reset_after=0.08
    ) as runtime:
        stub = runtime.namespace("fragile").get_by_name("later")
        with caplog.at_level(logging.WARNING, logger=WATCHDOG_LOGGER):
            await stub.block_after_await(0.15)
        await trio.testing.wait_all_tasks_blocked()
        assert runtime.statistics().resets == 1
    [message] = warnings_of(caplog)
    assert "in Fragile.block_after_await at " in message, message
    assert "objects.py:" in message, message


async def test_blocking_constructor_is_named_and_reset(
    runtime_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    async with runtime_factory(
        objects=OBJECTS, blocking_warning_after=0.05, blocking_reset_after=0.08
    ) as runtime:
        ns = runtime.namespace("fragile")
        with caplog.at_level(logging.WARNING, logger=WATCHDOG_LOGGER):
            assert await ns.get_by_name("slow-ctor").hit() == 1
            await trio.lowlevel.checkpoint()
        await trio.testing.wait_all_tasks_blocked()
        assert runtime.statistics().resets == 1
        assert await ns.get_by_name("other").hit() == 1
    [message] = warnings_of(caplog)
    assert "fragile:'slow-ctor' in Fragile constructor" in message, message


async def test_blocking_wait_until_work_is_named_and_reset(
    runtime_factory: Factory,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with runtime_factory(
        objects=OBJECTS, blocking_warning_after=0.05, blocking_reset_after=0.08
    ) as runtime:
        ns = runtime.namespace("fragile")
        worker, neighbour = ns.get_by_name("worker"), ns.get_by_name("neighbour")
        await neighbour.hit()
        with caplog.at_level(logging.WARNING, logger=WATCHDOG_LOGGER):
            await worker.start_work("block")
            await trio.sleep(2)
            await trio.testing.wait_all_tasks_blocked()
        assert runtime.statistics().resets == 1
        assert await neighbour.hit() == 2
    [message] = warnings_of(caplog)
    assert "fragile:'worker' in Fragile.start_work.<locals>.blocks" in message, message


async def test_blocking_websocket_handler_resets_the_object_not_its_socket(
    runtime_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    async with runtime_factory(
        objects=OBJECTS, blocking_warning_after=0.05, blocking_reset_after=0.08
    ) as runtime:
        stub = runtime.namespace("fragile").get_by_name("room")
        async with open_websocket(stub) as ws:
            await ws.send("one")
            assert await ws.receive() == "one #1"
            with caplog.at_level(logging.WARNING, logger=WATCHDOG_LOGGER):
                await ws.send("block")
                assert await ws.receive() == "block #2"
                await trio.testing.wait_all_tasks_blocked()
            assert runtime.statistics().resets == 1
            await ws.send("three")
            assert await ws.receive() == "three #1", "a fresh instance, the same socket"
    [message] = warnings_of(caplog)
    assert "fragile:'room' in Fragile.websocket_message" in message, message


async def test_blocking_outside_any_object_is_logged_and_resets_nothing(
    runtime_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    async with runtime_factory(
        objects=OBJECTS, blocking_warning_after=0.05, blocking_reset_after=0.08
    ) as runtime:
        stub = runtime.namespace("fragile").get_by_name("bystander")
        await stub.hit()
        with caplog.at_level(logging.WARNING, logger=WATCHDOG_LOGGER):
            await trio.lowlevel.checkpoint()
            block_loop(0.12)
            await trio.lowlevel.checkpoint()
        await trio.testing.wait_all_tasks_blocked()
        assert runtime.statistics().resets == 0
        assert await stub.hit() == 2
    [message] = warnings_of(caplog)
    assert "(no object)" in message and "objects.py:" in message, message


async def test_watchdog_can_be_turned_off(
    runtime_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    async with runtime_factory(
        objects=OBJECTS, blocking_warning_after=None, blocking_reset_after=None
    ) as runtime:
        assert runtime.watchdog is None
        with caplog.at_level(logging.WARNING, logger=WATCHDOG_LOGGER):
            await runtime.namespace("fragile").get_by_name("x").block(0.06)
            await trio.lowlevel.checkpoint()
    assert warnings_of(caplog) == []


async def test_watchdog_is_removed_when_the_runtime_closes(
    runtime_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    async with runtime_factory(objects=OBJECTS, blocking_warning_after=0.03) as runtime:
        watchdog = runtime.watchdog
        assert watchdog is not None
    with caplog.at_level(logging.WARNING, logger=WATCHDOG_LOGGER):
        block_loop(0.06)
        await trio.lowlevel.checkpoint()
    assert warnings_of(caplog) == [], "no instrument is left behind"
    assert watchdog._thread is None, "the sampler thread was stopped"


@pytest.mark.parametrize("option", ["blocking_warning_after", "blocking_reset_after"])
async def test_watchdog_limits_are_checked(runtime_factory: Factory, option: str) -> None:
    with pytest.raises(ValueError, match=rf"{option} must be a positive.*got -1"):
        async with runtime_factory(objects=OBJECTS, **{option: -1}):
            pass


async def test_a_block_nobody_could_look_into_is_reported_but_resets_nothing(
    runtime_factory: Factory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # When the sampler thread cannot see the loop's frames (say, one long C
    # call holding the GIL), the block is still measured and reported, but
    # no object is blamed or reset: the watchdog never guesses.
    from trio_durable import _watchdog

    def blind(self: Any) -> Any:
        raise RuntimeError("no frames")

    monkeypatch.setattr(_watchdog.Watchdog, "_take_sample", blind)
    async with runtime_factory(
        objects=OBJECTS, blocking_warning_after=0.05, blocking_reset_after=0.08
    ) as runtime:
        stub = runtime.namespace("fragile").get_by_name("opaque")
        with caplog.at_level(logging.WARNING, logger=WATCHDOG_LOGGER):
            assert await stub.block(0.15) == 1
            await trio.lowlevel.checkpoint()
            await trio.testing.wait_all_tasks_blocked()
        assert runtime.statistics().resets == 0, "an unidentified block resets nothing"
        assert await stub.hit() == 2, "the object kept its state"
    [message] = warnings_of(caplog)
    assert "(no object)" in message, message
    assert "the limit is 0.050 s (blocking_warning_after)" in message, message


async def test_a_step_that_keeps_blocking_is_reported_while_it_runs(
    runtime_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    async with runtime_factory(
        objects=OBJECTS, blocking_warning_after=0.02, blocking_reset_after=None
    ) as runtime:
        stub = runtime.namespace("fragile").get_by_name("stuck")
        with caplog.at_level(logging.WARNING, logger=WATCHDOG_LOGGER):
            await stub.block(0.6)  # ten times the threshold is 0.2 s: well inside the block
            await trio.lowlevel.checkpoint()
    messages = warnings_of(caplog)
    assert len(messages) == 2, messages
    still, final = messages
    assert still.startswith("the event loop is still blocked after "), still
    still_for = float(still.removeprefix("the event loop is still blocked after ").split(" s")[0])
    assert still_for >= 0.2, f"reported once ten times the threshold had passed: {still}"
    assert "fragile:'stuck' in Fragile.block" in still, still
    # Measured from the first ping the block delayed. The bounds are wide on
    # purpose: a loaded machine delays the sampler thread, never by this much.
    blocked_for = float(final.removeprefix("the event loop was blocked for ").split(" s ")[0])
    assert 0.3 <= blocked_for < 5.0, final


async def test_garbage_collection_pauses_are_not_blamed_on_the_running_object(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import gc
    import time

    import attrs

    heap = [[n] for n in range(600_000)]  # a heap whose full collection takes a while
    started = time.perf_counter()
    gc.collect()
    pause = time.perf_counter() - started
    limit = max(pause / 3, 0.01)

    @attrs.define(eq=False)
    class Innocent(td.DurableObject):
        async def work(self) -> str:
            gc.collect()  # a full collection lands in this object's step
            return "done"

    async with td.open_runtime(
        objects={"i": Innocent}, blocking_warning_after=limit, blocking_reset_after=limit
    ) as rt:
        stub = rt.namespace("i").get_by_name("x")
        assert await stub.work() == "done"
        await trio.sleep(0.01)
        assert rt.statistics().resets == 0, f"a {pause:.3f} s GC pause must not reset the object"
    del heap
    assert "blocked" not in caplog.text, caplog.text
