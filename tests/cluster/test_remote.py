"""What crosses a process boundary with a call: declared classes, and errors by type."""

from __future__ import annotations

import enum

import attrs
import pytest

import trio_durable as td
from trio_durable import _codec
from trio_durable._cluster._remote import AppClasses, encode_error, rebuild_error


@attrs.frozen
class Hinted:
    x: int


@attrs.frozen
class Nested:
    inner: Hinted


class Colour(enum.Enum):
    RED = "red"


class AppError(Exception):
    pass


@attrs.define(eq=False)
class Thing(td.DurableObject):
    async def take(self, value: Nested, others: list[Hinted] | None = None) -> Colour:
        return Colour.RED

    async def untyped(self, value):  # type: ignore[no-untyped-def]
        return value


CLASSES = AppClasses(["tests"])


def test_classes_named_in_a_methods_hints_are_accepted() -> None:
    allowed = CLASSES.allowed(Thing, "take")
    for cls in (Hinted, Nested, Colour):
        assert _codec.class_name(cls) in allowed, cls


def test_classes_the_app_defines_are_accepted_without_hints() -> None:
    allowed = CLASSES.allowed(Thing, "untyped")
    assert _codec.class_name(Hinted) in allowed, "defined at the top of an app module"


def test_a_class_outside_the_app_and_the_hints_is_refused() -> None:
    allowed = AppClasses(["nothing_of_ours"]).allowed(Thing, "untyped")
    data = _codec.encode_call(Hinted(1))
    with pytest.raises(TypeError, match="does not declare"):
        _codec.decode_call(data, allowed=allowed)


def _round_trip(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as raised:
        data = _codec.decode(_codec.encode(encode_error(raised)))
    return rebuild_error(data, CLASSES)


def test_a_builtin_exception_keeps_its_type_and_arguments() -> None:
    back = _round_trip(KeyError("missing", 3))
    assert type(back) is KeyError and back.args == ("missing", 3)


def test_a_trio_durable_exception_keeps_its_type() -> None:
    back = _round_trip(td.LimitExceededError("key is 3,000 bytes; the limit is 2,048"))
    assert type(back) is td.LimitExceededError
    assert str(back) == "key is 3,000 bytes; the limit is 2,048"


def test_an_app_exception_keeps_its_type() -> None:
    assert type(_round_trip(AppError("boom"))) is AppError


def test_the_cause_crosses_with_its_exception() -> None:
    try:
        try:
            try:
                raise td.StorageError("the database is unreachable")
            except td.StorageError as storage:
                raise td.CommitFailedError("a storage commit failed") from storage
        except td.CommitFailedError as failed:
            raise td.ObjectResetError("the object was reset") from failed
    except td.ObjectResetError as raised:
        data = _codec.decode(_codec.encode(encode_error(raised)))
    back = rebuild_error(data, CLASSES)
    assert type(back) is td.ObjectResetError
    assert type(back.__cause__) is td.CommitFailedError
    assert type(back.__cause__.__cause__) is td.StorageError
    assert str(back.__cause__.__cause__) == "the database is unreachable"


def test_a_long_chain_of_causes_is_cut() -> None:
    error: BaseException = ValueError("0")
    for n in range(1, 10):
        try:
            raise ValueError(str(n)) from error
        except ValueError as raised:
            error = raised
    back = rebuild_error(encode_error(error), CLASSES)
    depth = 0
    while back.__cause__ is not None:
        back, depth = back.__cause__, depth + 1
    assert depth == 3


def test_a_foreign_exception_arrives_as_remote_error_with_its_traceback() -> None:
    foreign = AppClasses(["elsewhere"])
    try:
        raise AppError("boom")
    except AppError as raised:
        data = encode_error(raised)
    back = rebuild_error(data, foreign)
    assert isinstance(back, td.RemoteError)
    assert back.type_name.endswith("AppError") and back.message == "boom"
    assert "raise AppError" in back.remote_traceback


def test_the_remote_traceback_is_attached_as_a_note() -> None:
    back = _round_trip(ValueError("bad"))
    notes = getattr(back, "__notes__", [])
    assert notes and "raised in another process" in notes[0] and "ValueError" in notes[0]


def test_an_exception_whose_arguments_are_not_data_still_arrives() -> None:
    back = _round_trip(ValueError(object()))
    assert type(back) is ValueError, "rebuilt from its message"
