"""What crosses a process boundary with a call: the classes a receiver accepts, and errors.

Arguments and results cross as RPC encodings of the value codec
(``_codec.encode_call``). The receiver rebuilds records (attrs instances)
and enum members only of classes it *declares*: the ones named in the
called method's type hints, and those the app itself defines at the top
level of its own modules (already imported: nothing is imported here).

An exception raised by the object crosses as its type's name, its
arguments, its message and its traceback text. The caller rebuilds it with
its own type when that type is a builtin exception, one of trio_durable's,
or one defined in the app's modules; any other arrives as
:class:`~trio_durable.RemoteError`. Either way the remote traceback is
attached as a note.
"""

from __future__ import annotations

import builtins
import contextlib
import enum
import sys
import traceback
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Final

import attrs

from .. import _codec, _exceptions

__all__ = ["AppClasses", "encode_error", "rebuild_error"]

_REMOTE_NOTE: Final = "raised in another process of the deployment:\n"


class AppClasses:
    """The classes a process of this app accepts across its boundary.

    Args:
        modules: The app's top-level packages or modules (``"examples"`` for
            ``examples.chat``): their already-imported modules define the
            records, enums and exceptions that may cross.
    """

    def __init__(self, modules: Iterable[str]) -> None:
        self._roots = frozenset(modules)
        self._records: dict[str, type] | None = None
        self._by_method: dict[tuple[type, str], dict[str, type]] = {}

    def is_app_module(self, name: str) -> bool:
        """True when ``name`` is one of the app's modules."""
        return name.split(".", 1)[0] in self._roots

    def _app_records(self) -> dict[str, type]:
        if self._records is None:
            found: dict[str, type] = {}
            for name, module in list(sys.modules.items()):
                if module is None or not self.is_app_module(name):
                    continue
                for value in list(vars(module).values()):
                    if _is_record_class(value) and value.__module__ == name:
                        found[_codec.class_name(value)] = value
            self._records = found
        return self._records

    def allowed(self, object_class: type, method: str) -> Mapping[str, type]:
        """Classes that may arrive in a call of ``object_class.method`` (or its result)."""
        key = (object_class, method)
        cached = self._by_method.get(key)
        if cached is not None:
            return cached
        allowed = dict(self._app_records())
        function = getattr(object_class, method, None)
        if function is not None:
            for cls in _classes_in_hints(function):
                allowed[_codec.class_name(cls)] = cls
        self._by_method[key] = allowed
        return allowed

    def exception_class(self, module: str, qualname: str) -> type[Exception] | None:
        """The local class of a remote exception, when it may be rebuilt here."""
        found: object = None
        if module == "builtins":
            found = getattr(builtins, qualname, None)
        elif module == "trio_durable" or module.startswith("trio_durable."):
            found = getattr(_exceptions, qualname, None)
        elif self.is_app_module(module):
            found = sys.modules.get(module)
            for part in qualname.split("."):
                found = getattr(found, part, None)
        if isinstance(found, type) and issubclass(found, Exception):
            return found
        return None


def _is_record_class(value: object) -> bool:
    return isinstance(value, type) and (attrs.has(value) or issubclass(value, enum.Enum))


def _classes_in_hints(function: Any) -> set[type]:
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # an unresolvable annotation: accept only the app's classes
        return set()
    found: set[type] = set()
    pending = list(hints.values())
    seen: set[int] = set()
    while pending:
        hint = pending.pop()
        if id(hint) in seen:
            continue
        seen.add(id(hint))
        pending.extend(typing.get_args(hint))
        if _is_record_class(hint):
            found.add(hint)
            if attrs.has(hint):
                # An attrs class's unresolvable annotation: its fields' classes
                # are then accepted only if the app defines them.
                with contextlib.suppress(Exception):
                    pending.extend(typing.get_type_hints(hint).values())
    return found


#: Causes (``raise ... from``) that cross with an exception, at most.
_MAX_CAUSES: Final = 3


def encode_error(exc: BaseException, *, causes: int = _MAX_CAUSES) -> list[Any]:
    """An exception as data: ``[module, qualname, args or None, message, traceback, cause]``.

    The cause is encoded the same way (``None`` when there is none), so a
    caller can tell, say, a reset caused by the storage from another one.
    """
    kind = type(exc)
    try:
        args: bytes | None = _codec.encode_call(exc.args, where="exception arguments")
    except TypeError:
        args = None
    text = "".join(traceback.format_exception(exc))
    cause = None
    if exc.__cause__ is not None and causes > 0:
        cause = encode_error(exc.__cause__, causes=causes - 1)
    return [kind.__module__, kind.__qualname__, args, str(exc), text, cause]


def rebuild_error(data: Any, classes: AppClasses, *, note: bool = True) -> BaseException:
    """The exception that ``encode_error`` described, as close to the original as allowed."""
    module, qualname, args, message, text, cause = data
    error: BaseException | None = None
    cls = classes.exception_class(module, qualname)
    if cls is not None:
        try:
            values = (
                _codec.decode_call(args, allowed={}, where="exception arguments")
                if args is not None
                else (message,)
            )
            error = cls(*values)
        except Exception:
            error = None
    if error is None:
        name = qualname if module == "builtins" else f"{module}.{qualname}"
        error = _exceptions.RemoteError(name, message, text)
    if cause is not None:
        error.__cause__ = rebuild_error(cause, classes, note=False)
    if note:
        error.add_note(_REMOTE_NOTE + text.rstrip())
    return error
