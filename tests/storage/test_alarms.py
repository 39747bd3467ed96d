"""Alarms: timing, durability, retries, and the handler's view of get_alarm()."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
import trio
import trio.testing

import trio_durable as td
from trio_durable import _alarms
from trio_durable._core import _clock
from trio_durable._ids import shard_of
from trio_durable.testing import evict, run_alarm, run_in_object

from .objects import OBJECTS


async def _set(stub: td.Stub, when: Any, mode: str | None = None) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> None:
        if mode is not None:
            await ctx.storage.put("alarm_mode", mode)
        await ctx.storage.set_alarm(when)

    await run_in_object(stub, body)


async def _call(stub: td.Stub, method: str, *args: Any) -> Any:
    async def body(obj: Any, ctx: td.ObjectContext) -> Any:
        return await getattr(ctx.storage, method)(*args)

    return await run_in_object(stub, body)


async def _log(stub: td.Stub) -> list[list[Any]]:
    return await stub.get("alarm_log") or []  # type: ignore[no-any-return]


@pytest.fixture
def no_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_alarms, "jitter", lambda: 0.0)


async def test_alarm_fires_at_its_time(
    autojump_clock: trio.testing.MockClock, runtime: td.Runtime, box: td.Stub
) -> None:
    start = trio.current_time()
    await _set(box, runtime.wall_time() + 10)
    await trio.sleep(11)
    assert [[start + 10, 0, False, "box-1"]] == await _log(box), "fired once, exactly at +10 s"


async def test_get_alarm_returns_the_time(runtime: td.Runtime, box: td.Stub) -> None:
    at = runtime.wall_time() + 100
    await _set(box, at)
    assert at == await _call(box, "get_alarm"), "get_alarm() gives back epoch seconds"


async def test_get_alarm_is_none_without_alarm(box: td.Stub) -> None:
    assert None is await _call(box, "get_alarm"), "no alarm set"


async def test_aware_datetime_is_accepted(runtime: td.Runtime, box: td.Stub) -> None:
    when = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    await _set(box, when)
    assert when.timestamp() == await _call(box, "get_alarm"), "stored as epoch seconds"


async def test_naive_datetime_is_refused(box: td.Stub) -> None:
    with pytest.raises(TypeError, match="aware datetime"):
        await _set(box, datetime.datetime(2030, 1, 1))


async def test_non_finite_time_is_refused(box: td.Stub) -> None:
    with pytest.raises(ValueError, match="finite"):
        await _set(box, float("nan"))


async def test_past_alarm_fires_at_once(
    autojump_clock: trio.testing.MockClock, runtime: td.Runtime, box: td.Stub
) -> None:
    start = trio.current_time()
    await _set(box, runtime.wall_time() - 3600)
    await trio.sleep(1)
    assert [start] == [entry[0] for entry in await _log(box)], "a past time runs at once"


async def test_delete_alarm_prevents_firing(
    autojump_clock: trio.testing.MockClock, runtime: td.Runtime, box: td.Stub
) -> None:
    await _set(box, runtime.wall_time() + 10)
    await _call(box, "delete_alarm")
    await trio.sleep(20)
    assert (await _log(box), await _call(box, "get_alarm")) == ([], None), "never fired"


async def test_set_alarm_replaces_the_previous_one(
    autojump_clock: trio.testing.MockClock, runtime: td.Runtime, box: td.Stub
) -> None:
    start = trio.current_time()
    await _set(box, runtime.wall_time() + 10)
    await _set(box, runtime.wall_time() + 20)
    await trio.sleep(30)
    assert [start + 20] == [entry[0] for entry in await _log(box)], "only the second fires"


async def test_alarm_is_gone_after_it_ran(
    autojump_clock: trio.testing.MockClock, runtime: td.Runtime, box: td.Stub
) -> None:
    await _set(box, runtime.wall_time() + 1)
    await trio.sleep(2)
    assert None is await _call(box, "get_alarm"), "a successful alarm is cleared"


async def test_alarm_fires_after_eviction_with_the_name(
    autojump_clock: trio.testing.MockClock, runtime: td.Runtime, box: td.Stub
) -> None:
    await _set(box, runtime.wall_time() + 30)
    await evict(box)
    await trio.sleep(31)
    log = await _log(box)
    assert len(log) == 1, "the evicted object was woken"
    assert log[0][3] == "box-1", "ctx.id.name survives"


async def test_alarm_survives_restart(
    autojump_clock: trio.testing.MockClock, runtime_factory: Any
) -> None:
    async with runtime_factory(objects=OBJECTS) as rt:
        stub = rt.namespace("boxes").get_by_name("restart")
        await _set(stub, rt.wall_time() + 10)
    async with runtime_factory(objects=OBJECTS) as rt:
        await trio.sleep(11)
        log = await _log(rt.namespace("boxes").get_by_name("restart"))
    assert [entry[3:] for entry in log] == [["restart"]], "fired after reopening, with the name"


async def test_alarm_due_while_down_fires_right_after_start(
    autojump_clock: trio.testing.MockClock,
    runtime_factory: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with runtime_factory(objects=OBJECTS) as rt:
        await _set(rt.namespace("boxes").get_by_name("down"), rt.wall_time() + 60)
    real = _clock.system_time
    monkeypatch.setattr(_clock, "system_time", lambda: real() + 3600)  # an hour later
    async with runtime_factory(objects=OBJECTS) as rt:
        reopened = trio.current_time()
        await trio.sleep(1)
        log = await _log(rt.namespace("boxes").get_by_name("down"))
    assert [reopened] == [entry[0] for entry in log], "fired as soon as the runtime opened"


async def test_failing_alarm_is_retried_with_backoff_then_dropped(
    autojump_clock: trio.testing.MockClock, runtime: td.Runtime, box: td.Stub, no_jitter: None
) -> None:
    start = trio.current_time()
    await _set(box, runtime.wall_time() + 10, mode="fail")
    await trio.sleep(1000)
    log = await _log(box)
    times = [entry[0] - start for entry in log]
    assert times == [10, 12, 16, 24, 40, 72, 136], "2 s doubling, 6 retries"
    assert [entry[1] for entry in log] == [0, 1, 2, 3, 4, 5, 6], "retry_count counts up"
    assert [entry[2] for entry in log] == [False] + [True] * 6, "is_retry after the first"
    assert None is await _call(box, "get_alarm"), "abandoned after the last retry"


async def test_retry_delay_has_up_to_25_percent_jitter(
    autojump_clock: trio.testing.MockClock, runtime: td.Runtime, box: td.Stub
) -> None:
    await _set(box, runtime.wall_time() + 10, mode="fail")
    await trio.sleep(11)
    first, pending = (await _log(box))[0][0], await _call(box, "get_alarm")
    delay = pending - (first + runtime.wall_time() - trio.current_time())
    assert 2.0 <= delay <= 2.5 + 1e-6, f"first retry after 2-2.5 s, got {delay}"


async def test_get_alarm_inside_handler_is_none(
    autojump_clock: trio.testing.MockClock, runtime: td.Runtime, box: td.Stub
) -> None:
    await _set(box, runtime.wall_time() + 1, mode="peek")
    await trio.sleep(2)
    assert None is await box.get("alarm_seen"), "the running alarm is not pending"
    assert len(await _log(box)) == 1, "the handler ran"


async def test_handler_may_set_the_next_alarm(
    autojump_clock: trio.testing.MockClock, runtime: td.Runtime, box: td.Stub
) -> None:
    start = trio.current_time()
    await _set(box, runtime.wall_time() + 1, mode="again")
    await trio.sleep(10)
    assert [start + 1, start + 6] == [e[0] for e in await _log(box)], "the new alarm fired too"


async def test_delete_alarm_does_not_cancel_the_running_handler(
    autojump_clock: trio.testing.MockClock, runtime: td.Runtime, box: td.Stub
) -> None:
    await _set(box, runtime.wall_time() + 1, mode="delete")
    await trio.sleep(5)
    assert True is await box.get("alarm_finished"), "the handler ran to its end"


async def test_running_alarm_keeps_the_object_awake(
    autojump_clock: trio.testing.MockClock, runtime: td.Runtime, box: td.Stub
) -> None:
    await _set(box, runtime.wall_time() + 1, mode="sleep")  # the handler sleeps 30 s
    await trio.sleep(20)
    before = runtime.statistics().evictions
    await trio.sleep(20)
    assert before == 0, "not evicted while the alarm handler ran (hibernate_after is 10 s)"


async def test_delete_all_removes_the_alarm(
    autojump_clock: trio.testing.MockClock, runtime: td.Runtime, box: td.Stub
) -> None:
    await _set(box, runtime.wall_time() + 10)
    await _call(box, "delete_all")
    await trio.sleep(20)
    assert await _log(box) == [], "the alarm was deleted with everything else"


async def test_run_alarm_runs_a_pending_alarm_now(
    autojump_clock: trio.testing.MockClock, runtime: td.Runtime, box: td.Stub
) -> None:
    start = trio.current_time()
    await _set(box, runtime.wall_time() + 3600)
    assert True is await run_alarm(box), "there was an alarm to run"
    assert [start] == [entry[0] for entry in await _log(box)], "it ran now"
    await trio.sleep(4000)
    assert len(await _log(box)) == 1, "and does not run again at its time"


async def test_run_alarm_without_alarm_is_false(box: td.Stub) -> None:
    assert False is await run_alarm(box), "nothing to run"


async def test_the_backend_loads_the_alarms_of_some_shards(runtime: td.Runtime) -> None:
    """What a cluster member reads when it takes shards: only their alarms."""
    boxes = runtime.namespace("boxes")
    stubs = [boxes.get_by_name(f"shard-{n}") for n in range(20)]
    for stub in stubs:
        await _set(stub, runtime.wall_time() + 3600)
    await runtime.storage_engine.flush()
    shards = {shard_of(stub.id.hex) for stub in stubs[:5]}
    some = await runtime.backend.load_alarms(shards)
    every = await runtime.backend.load_alarms()
    assert {a.hex_id for a in every} == {stub.id.hex for stub in stubs}
    assert {a.hex_id for a in some} == {s.id.hex for s in stubs if shard_of(s.id.hex) in shards}
    assert {a.name for a in some} <= {f"shard-{n}" for n in range(20)}, "names come along"
