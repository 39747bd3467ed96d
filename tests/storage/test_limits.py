"""Bad inputs to the key-value API: wrong types, limits, contradictory arguments."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import trio_durable as td
from trio_durable.testing import run_in_object

from .objects import OBJECTS

Call = Callable[[td.Storage], Awaitable[Any]]


async def _raises(stub: td.Stub, call: Call) -> BaseException:
    async def body(obj: Any, ctx: td.ObjectContext) -> BaseException:
        try:
            await call(ctx.storage)
        except Exception as exc:
            return exc
        raise AssertionError("the call did not raise")

    return await run_in_object(stub, body)


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda s: s.get(1), id="get-int-key"),
        pytest.param(lambda s: s.get(b"k"), id="get-bytes-key"),
        pytest.param(lambda s: s.get(["a", 2]), id="get-keys-with-int"),
        pytest.param(lambda s: s.get({"a": 1}), id="get-mapping"),
        pytest.param(lambda s: s.put(1, "v"), id="put-int-key"),
        pytest.param(lambda s: s.put("k"), id="put-without-value"),
        pytest.param(lambda s: s.put({"k": 1}, 2), id="put-mapping-and-value"),
        pytest.param(lambda s: s.put({1: "v"}), id="put-mapping-int-key"),
        pytest.param(lambda s: s.put("k", None), id="put-none"),
        pytest.param(lambda s: s.put("k", object()), id="put-unserializable"),
        pytest.param(lambda s: s.put("k", {1, 2}.__iter__()), id="put-iterator"),
        pytest.param(lambda s: s.delete(3), id="delete-int"),
        pytest.param(lambda s: s.list(start=1), id="list-int-start"),
        pytest.param(lambda s: s.list(prefix=b"p"), id="list-bytes-prefix"),
        pytest.param(lambda s: s.list(limit=1.5), id="list-float-limit"),
        pytest.param(lambda s: s.list(limit=True), id="list-bool-limit"),
        pytest.param(lambda s: s.list(reverse="yes"), id="list-str-reverse"),
        pytest.param(lambda s: s.set_alarm("soon"), id="alarm-str"),
        pytest.param(lambda s: s.set_alarm(True), id="alarm-bool"),
    ],
)
async def test_wrong_types_raise_type_error(box: td.Stub, call: Call) -> None:
    exc = await _raises(box, call)
    assert TypeError is type(exc), f"a clear TypeError, got {exc!r}"


async def test_value_with_none_says_use_delete(box: td.Stub) -> None:
    exc = await _raises(box, lambda s: s.put("k", None))
    assert "use delete()" in str(exc), "the message names the alternative"


async def test_key_over_2048_bytes_is_refused_with_size(box: td.Stub) -> None:
    exc = await _raises(box, lambda s: s.put("é" * 1050, 1))
    assert isinstance(exc, td.LimitExceededError), f"LimitExceededError, got {exc!r}"
    assert str(exc) == "key is 2,100 bytes; the limit is 2,048", "names size and limit"


async def test_key_of_exactly_2048_bytes_is_accepted(box: td.Stub) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> Any:
        await ctx.storage.put("k" * 2048, 1)
        return await ctx.storage.get("k" * 2048)

    assert await run_in_object(box, body) == 1, "the limit itself is allowed"


async def test_oversized_key_in_get_is_refused(box: td.Stub) -> None:
    exc = await _raises(box, lambda s: s.get("k" * 2049))
    assert isinstance(exc, td.LimitExceededError), "reads check the key size too"


async def test_limit_exceeded_is_a_value_error(box: td.Stub) -> None:
    exc = await _raises(box, lambda s: s.get("k" * 2049))
    assert isinstance(exc, ValueError), "callers catching ValueError catch limits"


async def test_key_with_lone_surrogate_is_refused(box: td.Stub) -> None:
    exc = await _raises(box, lambda s: s.put("bad\ud800", 1))
    assert ValueError is type(exc), f"not valid Unicode, got {exc!r}"


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda s: s.get([f"k{i}" for i in range(129)]), id="get"),
        pytest.param(lambda s: s.put({f"k{i}": i for i in range(129)}), id="put"),
        pytest.param(lambda s: s.delete([f"k{i}" for i in range(129)]), id="delete"),
    ],
)
async def test_more_than_128_keys_per_call_is_refused(box: td.Stub, call: Call) -> None:
    exc = await _raises(box, call)
    assert str(exc) == "129 keys in one call; the limit is 128", f"got {exc!r}"


async def test_128_keys_per_call_is_accepted(box: td.Stub) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> Any:
        await ctx.storage.put({f"k{i:03}": i for i in range(128)})
        return len(await ctx.storage.get([f"k{i:03}" for i in range(128)]))

    assert await run_in_object(box, body) == 128, "exactly the limit works"


async def test_value_over_2_mib_is_refused_with_size(box: td.Stub) -> None:
    exc = await _raises(box, lambda s: s.put("big", "x" * (2 * 1024 * 1024)))
    assert isinstance(exc, td.LimitExceededError), f"LimitExceededError, got {exc!r}"
    # 2 MiB of text, a 5-byte MessagePack string header and the format byte.
    expected = "value for key 'big' is 2,097,158 bytes serialized; the limit is 2,097,152"
    assert expected == str(exc), "names the serialized size and the limit"


async def test_oversized_value_in_mapping_writes_nothing(box: td.Stub) -> None:
    async def body(obj: Any, ctx: td.ObjectContext) -> Any:
        with pytest.raises(td.LimitExceededError):
            await ctx.storage.put({"small": 1, "big": "x" * (3 * 1024 * 1024)})
        return await ctx.storage.get("small")

    assert None is await run_in_object(box, body), "a refused put(mapping) stores nothing"


async def test_value_limit_is_configurable(runtime_factory: Any) -> None:
    async with runtime_factory(objects=OBJECTS, max_value_bytes=10) as rt:
        stub = rt.namespace("boxes").get_by_name("small")
        exc = await _raises(stub, lambda s: s.put("k", "x" * 20))
    assert str(exc) == "value for key 'k' is 22 bytes serialized; the limit is 10", "custom limit"


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
async def test_bad_max_value_bytes_is_refused(runtime_factory: Any, bad: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        async with runtime_factory(objects=OBJECTS, max_value_bytes=bad):
            pass


async def test_list_start_with_start_after_is_an_error(box: td.Stub) -> None:
    exc = await _raises(box, lambda s: s.list(start="a", start_after="b"))
    assert ValueError is type(exc), f"contradictory arguments, got {exc!r}"


@pytest.mark.parametrize("limit", [0, -5])
async def test_list_limit_must_be_positive(box: td.Stub, limit: int) -> None:
    exc = await _raises(box, lambda s: s.list(limit=limit))
    assert ValueError is type(exc), f"limit must be > 0, got {exc!r}"


async def test_set_alarm_on_class_without_handler_is_an_error(runtime: td.Runtime) -> None:
    stub = runtime.namespace("plain").get_by_name("p")
    exc = await _raises(stub, lambda s: s.set_alarm(0))
    assert TypeError is type(exc), f"no alarm() handler, got {exc!r}"
    assert "NoAlarm has no alarm() handler" in str(exc), "the message names the class"
