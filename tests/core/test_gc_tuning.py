"""tune_gc with several runtimes in one process, and with an application's own gc settings."""

from __future__ import annotations

import gc

import trio

import trio_durable as td
from trio_durable._gc_tuning import TUNED_GC_THRESHOLDS

from .conftest import OBJECTS


async def test_two_tuned_runtimes_closed_in_opening_order_tune_until_the_last_closes() -> None:
    before = gc.get_threshold()
    close_first, close_second = trio.Event(), trio.Event()
    first_closed, second_closed = trio.Event(), trio.Event()

    async def runtime(closing: trio.Event, closed: trio.Event) -> None:
        async with td.open_runtime(OBJECTS, tune_gc=True):
            opened.set()
            await closing.wait()
        closed.set()

    async with trio.open_nursery() as nursery:
        opened = trio.Event()
        nursery.start_soon(runtime, close_first, first_closed)
        await opened.wait()
        opened = trio.Event()
        nursery.start_soon(runtime, close_second, second_closed)
        await opened.wait()
        assert gc.get_threshold() == TUNED_GC_THRESHOLDS
        close_first.set()  # not the last opened: not LIFO
        await first_closed.wait()
        assert gc.get_threshold() == TUNED_GC_THRESHOLDS, "the open runtime is still tuned"
        assert gc.get_freeze_count() > 0, "and what it froze is still frozen"
        close_second.set()
        await second_closed.wait()
    assert gc.get_threshold() == before, "restored once both closed"
    assert gc.get_freeze_count() == 0, "unfrozen once both closed"


async def test_an_applications_own_freeze_outlives_a_tuned_runtime() -> None:
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        assert frozen > 0
        async with td.open_runtime(OBJECTS, tune_gc=True):
            pass
        assert gc.get_freeze_count() >= frozen, "the application's freeze was undone"
    finally:
        gc.unfreeze()


async def test_thresholds_the_application_sets_while_tuned_stay() -> None:
    before = gc.get_threshold()
    try:
        async with td.open_runtime(OBJECTS, tune_gc=True):
            gc.set_threshold(5_000, 20, 20)
        assert gc.get_threshold() == (5_000, 20, 20)
    finally:
        gc.set_threshold(*before)
