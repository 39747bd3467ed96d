"""A stateful model test of the key-value storage against a plain dict.

Hypothesis drives random sequences of ``put``/``delete``/``get``/``list``,
transactions that commit, roll back or raise, ``delete_all``, evictions and
restarts of the whole runtime, on a real SQLite file under ``tmp_path``.
After every step each object's full listing must equal the model.

Hypothesis's state machines are synchronous, so the machine runs in a worker
thread (``trio.to_thread.run_sync``) and every rule calls back into the
test's Trio loop with ``trio.from_thread.run``; the runtime lives in a task
of the test's nursery, so that a restart can close it and open a new one.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import trio
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import trio_durable as td
from trio_durable.testing import evict


class Boom(Exception):
    """Raised inside a transaction on purpose."""


@attrs.define(eq=False)
class Kv(td.DurableObject):
    """The storage API over RPC, one call per method."""

    async def put(self, key: str, value: Any) -> None:
        await self.ctx.storage.put(key, value)

    async def put_many(self, entries: dict[str, Any]) -> None:
        await self.ctx.storage.put(entries)

    async def get(self, key: str) -> Any:
        return await self.ctx.storage.get(key)

    async def get_many(self, keys: list[str]) -> dict[str, Any]:
        return await self.ctx.storage.get(keys)

    async def delete(self, key: str) -> bool:
        return await self.ctx.storage.delete(key)

    async def delete_many(self, keys: list[str]) -> int:
        return await self.ctx.storage.delete(keys)

    async def delete_all(self) -> None:
        await self.ctx.storage.delete_all()

    async def items(self, **options: Any) -> list[tuple[str, Any]]:
        return list((await self.ctx.storage.list(**options)).items())

    async def transaction(self, ops: list[tuple[str, Any]], ending: str) -> list[tuple[str, Any]]:
        """Apply ``ops`` (value None: delete) in a transaction; return what it saw inside."""
        async with self.ctx.storage.transaction() as txn:
            for key, value in ops:
                if value is None:
                    await txn.delete(key)
                else:
                    await txn.put(key, value)
            inside = list((await txn.list()).items())
            if ending == "rollback":
                txn.rollback()
            elif ending == "raise":
                raise Boom("the transaction body failed")
        return inside


OBJECTS: dict[str, type[td.DurableObject]] = {"kv": Kv}
NAMES = ("alpha", "beta")

# A small alphabet so that keys collide and prefixes matter; multi-byte
# characters check the ordering by UTF-8 bytes.
keys = st.text(alphabet="ab\u00e9\U0001f600", min_size=1, max_size=3)
values = st.recursive(
    st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=5,
)
names = st.sampled_from(NAMES)


class RuntimeHost:
    """A runtime held open by a task of the test's nursery until ``stop``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.runtime: td.Runtime | None = None
        self.stop = trio.Event()
        self.closed = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with td.open_runtime(OBJECTS, self.data_dir) as runtime:
                self.runtime = runtime
                task_status.started()
                await self.stop.wait()
        finally:
            self.closed.set()


class StorageMachine(RuleBasedStateMachine):
    """Storage of two objects, against a dict per object."""

    # Set by the test before the machine runs.
    nursery: trio.Nursery
    base: Path
    counter = itertools.count()

    def __init__(self) -> None:
        super().__init__()
        self.data_dir = self.base / f"run-{next(self.counter)}"
        self.model: dict[str, dict[str, Any]] = {name: {} for name in NAMES}
        self.host = self._open()

    # ------------------------------------------------------------ plumbing

    def _open(self) -> RuntimeHost:
        host = RuntimeHost(self.data_dir)
        trio.from_thread.run(self.nursery.start, host.run)
        return host

    def _close(self) -> None:
        trio.from_thread.run_sync(self.host.stop.set)
        trio.from_thread.run(self.host.closed.wait)

    def call(self, name: str, method: str, *args: Any, **kwargs: Any) -> Any:
        runtime = self.host.runtime
        assert runtime is not None
        stub = runtime.namespace("kv").get_by_name(name)
        fn: Callable[..., Any] = getattr(stub, method)
        return trio.from_thread.run(functools.partial(fn, *args, **kwargs))

    def teardown(self) -> None:
        self._close()

    # --------------------------------------------------------------- rules

    @rule(name=names, key=keys, value=values)
    def put(self, name: str, key: str, value: Any) -> None:
        self.call(name, "put", key, value)
        self.model[name][key] = value

    @rule(name=names, entries=st.dictionaries(keys, values, max_size=5))
    def put_many(self, name: str, entries: dict[str, Any]) -> None:
        self.call(name, "put_many", entries)
        self.model[name].update(entries)

    @rule(name=names, key=keys)
    def get(self, name: str, key: str) -> None:
        assert self.call(name, "get", key) == self.model[name].get(key), key

    @rule(name=names, wanted=st.lists(keys, max_size=5, unique=True))
    def get_many(self, name: str, wanted: list[str]) -> None:
        model = self.model[name]
        expected = {key: model[key] for key in sorted(wanted) if key in model}
        got = self.call(name, "get_many", wanted)
        assert list(got.items()) == list(expected.items()), (got, expected)

    @rule(name=names, key=keys)
    def delete(self, name: str, key: str) -> None:
        existed = self.call(name, "delete", key)
        assert existed == (key in self.model[name]), key
        self.model[name].pop(key, None)

    @rule(name=names, doomed=st.lists(keys, max_size=5, unique=True))
    def delete_many(self, name: str, doomed: list[str]) -> None:
        count = self.call(name, "delete_many", doomed)
        assert count == sum(key in self.model[name] for key in doomed), doomed
        for key in doomed:
            self.model[name].pop(key, None)

    @rule(name=names)
    def delete_all(self, name: str) -> None:
        self.call(name, "delete_all")
        self.model[name].clear()

    @rule(
        name=names,
        ops=st.lists(st.tuples(keys, st.none() | values), max_size=6),
        ending=st.sampled_from(["commit", "rollback", "raise"]),
    )
    def transaction(self, name: str, ops: list[tuple[str, Any]], ending: str) -> None:
        after = dict(self.model[name])
        for key, value in ops:
            if value is None:
                after.pop(key, None)
            else:
                after[key] = value
        try:
            inside = self.call(name, "transaction", ops, ending)
        except Boom:
            assert ending == "raise", "only a raising body raises"
        else:
            assert ending != "raise", "the body's exception leaves the block"
            assert inside == sorted(after.items()), "reads inside see the transaction's writes"
        if ending == "commit":
            self.model[name] = after

    @rule(
        name=names,
        start=st.none() | keys,
        start_after=st.none() | keys,
        end=st.none() | keys,
        prefix=st.none() | st.text(alphabet="ab\u00e9", max_size=2),
        reverse=st.booleans(),
        limit=st.none() | st.integers(min_value=1, max_value=4),
    )
    def list_range(
        self,
        name: str,
        start: str | None,
        start_after: str | None,
        end: str | None,
        prefix: str | None,
        reverse: bool,
        limit: int | None,
    ) -> None:
        if start is not None and start_after is not None:
            start_after = None  # the API refuses both at once
        items = sorted(self.model[name].items())
        items = [
            (key, value)
            for key, value in items
            if (prefix is None or key.startswith(prefix))
            and (start is None or key >= start)
            and (start_after is None or key > start_after)
            and (end is None or key < end)
        ]
        if reverse:
            items.reverse()
        if limit is not None:
            items = items[:limit]
        options = {
            "start": start,
            "start_after": start_after,
            "end": end,
            "prefix": prefix,
            "reverse": reverse,
            "limit": limit,
        }
        got = self.call(name, "items", **options)
        assert got == items, (options, got, items)

    @rule(name=names)
    def evict(self, name: str) -> None:
        runtime = self.host.runtime
        assert runtime is not None
        trio.from_thread.run(evict, runtime.namespace("kv").get_by_name(name))

    @precondition(lambda self: any(self.model.values()))
    @rule()
    def restart(self) -> None:
        self._close()
        self.host = self._open()

    # ----------------------------------------------------------- invariant

    @invariant()
    def storage_matches_the_model(self) -> None:
        for name in NAMES:
            got = self.call(name, "items")
            assert got == sorted(self.model[name].items()), (name, got)


async def test_storage_behaves_like_a_dict(nursery: trio.Nursery, tmp_path: Path) -> None:
    StorageMachine.nursery = nursery
    StorageMachine.base = tmp_path
    await trio.to_thread.run_sync(
        functools.partial(
            run_state_machine_as_test,
            StorageMachine,
            settings=settings(max_examples=20, stateful_step_count=30, deadline=None),
        )
    )
