"""Values the codec cannot carry fail at once, with a path, before any byte exists."""

from __future__ import annotations

import io
import socket
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
    assert expected == message, "the example of the issue, word for word"


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


def test_deep_nesting_is_refused_with_the_limit() -> None:
    value: Any = 1
    for _ in range(_codec.MAX_DEPTH + 1):
        value = [value]
    message = _refusal(value)
    assert f"is nested more than {_codec.MAX_DEPTH} containers deep" in message, message


def test_nesting_at_the_limit_is_accepted() -> None:
    value: Any = 1
    for _ in range(_codec.MAX_DEPTH):
        value = [value]
    assert _codec.decode(_codec.encode(value)) == value, "MAX_DEPTH levels are fine"


def test_very_deep_nesting_is_a_clear_error_not_a_crash() -> None:
    value: Any = []
    for _ in range(100_000):
        value = [value]
    message = _refusal(value)
    assert "containers deep" in message, message


def test_copy_refuses_a_function_before_the_call() -> None:
    with pytest.raises(TypeError, match=r"^kwargs\[\"f\"\] is a function; RPC values must be data"):
        _codec.copy_value({"f": print}, where="kwargs")


def test_stub_like_unknown_object_is_refused() -> None:
    class Stub:  # a handle that was never registered
        pass

    message = _refusal((Stub(),), where="args", rpc=True)
    assert message.startswith("args[0] is an object of class"), message
    assert "Stub" in message, message
