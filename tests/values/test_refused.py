"""Values the codec cannot carry fail at once, with a path, before any byte exists."""

from __future__ import annotations

import io
import socket
import sys
import threading
from typing import Any

import attrs
import pytest
import trio

from trio_durable import _codec


def _gen() -> Any:
    yield 1


class Unknown:
    pass


@attrs.frozen
class Key:
    name: str


@attrs.define
class Holder:
    inner: Any = None


def _refusal(value: Any, *, where: str = "value", rpc: bool = False) -> str:
    encode = _codec.encode_call if rpc else _codec.encode
    with pytest.raises(TypeError) as info:
        encode(value, where=where)
    return str(info.value)


def test_function_in_rpc_args_names_its_path() -> None:
    message = _refusal(({"callback": print},), where="args", rpc=True)
    expected = 'args[0]["callback"] is a function; RPC values must be data'
    assert expected == message, "the documented example, word for word"


def test_lambda_is_named_a_lambda() -> None:
    message = _refusal([1, lambda: 0])
    assert message.startswith("value[1] is a function (a lambda);"), message


@pytest.mark.parametrize(
    ("make", "what"),
    [
        (_gen, "a generator"),
        (lambda: io.BytesIO(), "an open file"),
        (lambda: socket.socket(), "a socket"),
        (lambda: threading.Lock(), "a lock"),
        (lambda: trio.Lock(), "a lock"),
        (lambda: Unknown(), f"an object of class {__name__}.Unknown"),
        (lambda: Unknown, "a class (Unknown)"),
    ],
    ids=["generator", "file", "socket", "thread-lock", "trio-lock", "object", "class"],
)
def test_unsupported_value_is_named(make: Any, what: str) -> None:
    value = make()
    try:
        message = _refusal({"k": [value]})
    finally:
        if hasattr(value, "close"):
            value.close()
    assert message.startswith(f'value["k"][0] is {what}'), message


def test_attachment_root_label() -> None:
    message = _refusal(Holder(inner=Unknown()), where="attachment")
    expected_start = "attachment.inner is an object of class"
    assert message.startswith(expected_start), message
    assert message.endswith("stored values must be data"), message


def test_bad_dict_key_is_named() -> None:
    message = _refusal({(1, Unknown()): 1})
    assert message.startswith("value<key (1, <"), message
    assert "[1] is an object of class" in message, message


def test_bad_set_member_is_named() -> None:
    message = _refusal({frozenset({Unknown()})})
    assert "{member 0:" in message and "is an object of class" in message, message


def test_frozen_record_as_stored_dict_key_is_refused() -> None:
    message = _refusal({Key("a"): 1})
    assert "frozen attrs instance used as a dict key" in message, message


def test_frozen_record_as_rpc_dict_key_keeps_its_class() -> None:
    data = _codec.encode_call({Key("a"): 1})
    back = _codec.decode_call(data, allowed=_codec.allow(Key))
    assert back == {Key("a"): 1}, f"got {back!r}"


def test_list_containing_itself_is_a_cycle() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    message = _refusal({"a": loop})
    expected = (
        'value["a"][1] is value["a"] again (a cycle); stored values must be data without cycles'
    )
    assert expected == message, "a cycle is named as one, at its first repetition"


def test_cycle_through_records_is_a_cycle() -> None:
    node = Holder()
    node.inner = [node]
    message = _refusal(node, rpc=True)
    assert message.startswith("value.inner[0] is value again (a cycle)"), message


def _nest(kind: str, depth: int) -> Any:
    """``depth`` containers of ``kind``, one in another, around an int."""
    value: Any = 1
    for _ in range(depth):
        if kind == "list":
            value = [value]
        elif kind == "dict":
            value = {"k": value}
        elif kind == "tuple":
            value = (value,)
        elif kind == "frozenset":
            value = frozenset({value})
        elif kind == "record":
            value = Holder(value)
        else:
            raise AssertionError(kind)
    return value


_KINDS = ["list", "dict", "tuple", "frozenset", "record"]


def _trip(value: Any, way: str) -> Any:
    if way == "storage":
        return _codec.decode(_codec.encode(value))
    if way == "rpc":
        return _codec.decode_call(_codec.encode_call(value), allowed=_codec.allow(Holder))
    return _codec.copy_value(value)


@pytest.mark.parametrize("way", ["storage", "rpc", "copy"])
@pytest.mark.parametrize("kind", _KINDS)
def test_nesting_at_the_limit_round_trips(kind: str, way: str) -> None:
    value = _nest(kind, _codec.MAX_DEPTH)
    back = _trip(value, way)
    if kind == "record" and way == "storage":
        expected: Any = 1
        for _ in range(_codec.MAX_DEPTH):
            expected = {"inner": expected}
        value = expected
    assert back == value, f"{_codec.MAX_DEPTH} levels of {kind} are accepted ({way})"


@pytest.mark.parametrize("way", ["storage", "rpc", "copy"])
@pytest.mark.parametrize("kind", _KINDS)
def test_nesting_one_past_the_limit_is_refused_with_the_limit_and_path(kind: str, way: str) -> None:
    value = _nest(kind, _codec.MAX_DEPTH + 1)
    with pytest.raises(TypeError) as info:
        _trip(value, way)
    message = str(info.value)
    limit = _codec.MAX_DEPTH
    assert f"is nested more than {limit} containers deep; the limit is {limit}" in message, message
    segment = {
        "list": "[0]",
        "dict": '["k"]',
        "tuple": "[0]",
        "frozenset": "{member 0:",
        "record": ".inner",
    }[kind]
    assert message.startswith("value" + segment), f"the path starts at the root: {message}"
    assert "more)..." in message, f"the path's middle is shortened: {message}"


def test_very_deep_nesting_is_a_clear_error_not_a_crash() -> None:
    value: Any = []
    for _ in range(100_000):
        value = [value]
    message = _refusal(value)
    assert "containers deep" in message, message


def _at_stack_depth(frames: int, call: Any) -> Any:
    if frames == 0:
        return call()
    return _at_stack_depth(frames - 1, call)


@pytest.mark.parametrize("kind", ["frozenset", "record"])  # three frames a level: the worst
def test_nesting_at_the_limit_leaves_room_for_a_deep_caller(kind: str) -> None:
    value = _nest(kind, _codec.MAX_DEPTH)
    back = _at_stack_depth(300, lambda: _trip(value, "rpc"))
    assert back == value, "a caller 300 frames deep can still send the deepest value"


def test_a_caller_too_deep_for_the_walk_gets_a_type_error() -> None:
    value = _nest("frozenset", _codec.MAX_DEPTH)
    frames = sys.getrecursionlimit() - 150  # leaves less than the walk needs
    with pytest.raises(TypeError, match="recursion limit .* was reached before the codec's own"):
        _at_stack_depth(frames, lambda: _codec.encode(value))
    with pytest.raises(TypeError, match="recursion limit"):
        _at_stack_depth(frames, lambda: _codec.copy_value(_nest("record", _codec.MAX_DEPTH)))


async def test_nesting_at_the_limit_in_a_trio_task_and_a_worker_thread() -> None:
    value = _nest("frozenset", _codec.MAX_DEPTH)
    in_task = _codec.decode(_codec.encode(value))
    in_thread = await trio.to_thread.run_sync(lambda: _codec.decode(_codec.encode(value)))
    assert in_task == value and in_thread == value, "the same limit holds in both"


def test_copy_refuses_a_function_before_the_call() -> None:
    with pytest.raises(TypeError, match=r"^kwargs\[\"f\"\] is a function; RPC values must be data"):
        _codec.copy_value({"f": print}, where="kwargs")


def test_stub_like_unknown_object_is_refused() -> None:
    class Stub:  # a handle that was never registered
        pass

    message = _refusal((Stub(),), where="args", rpc=True)
    assert message.startswith("args[0] is an object of class"), message
    assert "Stub" in message, message
