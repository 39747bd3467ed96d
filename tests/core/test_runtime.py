"""open_runtime: validation, statistics, shutdown."""

from __future__ import annotations

import gc

import attrs
import pytest
import trio
import trio.testing

import trio_durable as td
from trio_durable._gc_tuning import TUNED_GC_THRESHOLDS
from trio_durable._limits import STORAGE_CACHE_BYTES

from .conftest import OBJECTS
from .objects import Counter


async def test_statistics_count_activations_events_and_live_objects(runtime: td.Runtime) -> None:
    ns = runtime.namespace("counters")
    await ns.get_by_name("a").increment()
    await ns.get_by_name("a").increment()
    await ns.get_by_name("b").increment()
    stats = runtime.statistics()
    assert stats == td.RuntimeStatistics(
        live_objects=2,
        activations=2,
        evictions=0,
        resets=0,
        events_dispatched=3,
        storage_cache_budget_bytes=STORAGE_CACHE_BYTES,
    ), f"unexpected {stats}"
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        stats.activations = 0  # type: ignore[misc]


async def test_calls_after_close_raise_closed_resource_error(runtime_factory) -> None:  # type: ignore[no-untyped-def]
    async with runtime_factory(objects=OBJECTS) as rt:
        stub = rt.namespace("counters").get_by_name("a")
        await stub.increment()
    assert rt.closed
    with pytest.raises(trio.ClosedResourceError, match="runtime is closed"):
        await stub.increment()


async def test_call_in_flight_when_runtime_closes_gets_closed_resource_error(
    runtime_factory, autojump_clock: trio.testing.MockClock
) -> None:  # type: ignore[no-untyped-def]
    errors: list[BaseException] = []
    async with trio.open_nursery() as nursery, runtime_factory(objects=OBJECTS) as rt:
        stub = rt.namespace("counters").get_by_name("a")

        async def call() -> None:
            try:
                await stub.sleep_forever()
            except trio.ClosedResourceError as exc:
                errors.append(exc)

        nursery.start_soon(call)
        await trio.testing.wait_all_tasks_blocked()
    assert len(errors) == 1, "the caller must be told, not left hanging"
    assert "runtime closed" in str(errors[0])


async def test_user_exception_inside_block_is_not_wrapped(runtime_factory) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LookupError, match="mine") as info:
        async with runtime_factory(objects=OBJECTS) as rt:
            await rt.namespace("counters").get_by_name("a").increment()
            raise LookupError("mine")
    assert type(info.value) is LookupError, "no ExceptionGroup may leak to the user"


async def test_no_task_leaks_after_close(runtime_factory) -> None:  # type: ignore[no-untyped-def]
    root = trio.lowlevel.current_root_task()

    def count_tasks(task: trio.lowlevel.Task) -> int:
        return 1 + sum(
            count_tasks(child) for nursery in task.child_nurseries for child in nursery.child_tasks
        )

    before = count_tasks(root)
    async with runtime_factory(objects=OBJECTS) as rt:
        ns = rt.namespace("workers")
        for n in range(20):
            await ns.get_by_name(str(n)).start(1_000)
        assert count_tasks(root) > before + 20
    assert count_tasks(root) == before, "every task of the runtime must end with it"


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"objects": {}}, TypeError, "non-empty mapping"),
        ({"objects": {"x": int}}, TypeError, "must be a DurableObject subclass"),
        ({"objects": {"_x": Counter}}, ValueError, "do not start with '_'"),
        (
            {"objects": OBJECTS, "hibernate_after": 0},
            ValueError,
            "hibernate_after must be a positive",
        ),
        ({"objects": OBJECTS, "evict_after": "5"}, TypeError, "evict_after must be a number"),
        ({"objects": OBJECTS, "hibernate_after": float("inf")}, ValueError, "finite"),
        ({"objects": OBJECTS, "data_dir": 5}, TypeError, "data_dir must be a path"),
        ({"objects": OBJECTS, "data_dir": ""}, ValueError, "data_dir must not be empty"),
        ({"objects": OBJECTS, "database": 5}, TypeError, "database must be a postgresql"),
        ({"objects": OBJECTS, "backend": "x"}, TypeError, "backend must be a storage backend"),
        ({"objects": OBJECTS, "backend": object()}, TypeError, "lacks aclose, commit"),
        ({"objects": OBJECTS, "cluster": "x"}, TypeError, "cluster must be a ClusterSpec"),
        (
            {"objects": OBJECTS, "data_dir": "a", "backend": td.SqliteBackend(None)},
            TypeError,
            "only one of data_dir, database and backend",
        ),
    ],
)
async def test_bad_options_are_refused(kwargs, error, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=message):
        async with td.open_runtime(**kwargs):
            pass


@pytest.mark.parametrize(
    "bad",
    [
        {"hibernate_after": -1},
        {"max_value_bytes": 0},
        {"cluster": "x"},
        {"blocking_reset_after": float("nan")},
        {"tune_gc": 1},
    ],
    ids=lambda bad: next(iter(bad)),
)
async def test_a_refused_option_creates_no_data_dir(tmp_path, bad) -> None:  # type: ignore[no-untyped-def]
    data_dir = tmp_path / "data"
    with pytest.raises((TypeError, ValueError)):
        async with td.open_runtime(OBJECTS, data_dir=data_dir, **bad):
            pass
    assert not data_dir.exists(), f"{bad} was refused, yet {data_dir} was created"


async def test_non_attrs_subclass_is_refused() -> None:
    class Plain(td.DurableObject):
        pass

    with pytest.raises(TypeError, match="must be an attrs class"):
        async with td.open_runtime(objects={"p": Plain}):
            pass


async def test_unwritable_data_dir_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError, match="cannot create data_dir"):
        async with td.open_runtime(objects=OBJECTS, data_dir=blocker / "sub"):
            pass


async def test_in_memory_runtime_needs_no_data_dir() -> None:
    async with td.open_runtime(objects=OBJECTS) as rt:
        assert await rt.namespace("counters").get_by_name("a").increment() == 1


async def test_env_is_shared_by_objects() -> None:
    @attrs.define(eq=False)
    class Reader(td.DurableObject):
        async def read(self) -> object:
            return self.env

    async with td.open_runtime(objects={"r": Reader}, env={"region": "eu"}) as rt:
        assert await rt.namespace("r").get_by_name("a").read() == {"region": "eu"}


async def test_tune_gc_raises_thresholds_while_open_and_restores_them() -> None:
    before = gc.get_threshold()
    async with td.open_runtime(OBJECTS, tune_gc=True):
        assert gc.get_threshold() == TUNED_GC_THRESHOLDS
        assert gc.get_freeze_count() > 0, "what existed at start-up was frozen"
    assert gc.get_threshold() == before, "restored on exit"
    assert gc.get_freeze_count() == 0, "unfrozen on exit"


async def test_gc_is_left_alone_by_default() -> None:
    before = gc.get_threshold()
    async with td.open_runtime(OBJECTS):
        assert gc.get_threshold() == before, "a library changes no global setting unasked"


async def test_tune_gc_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="tune_gc"):
        async with td.open_runtime(OBJECTS, tune_gc="yes"):  # type: ignore[arg-type]
            pass
