"""The one value codec: stored values, attachments, RPC arguments and results.

Values are copies that round-trip. Whatever crosses a boundary (a
``storage.put``, an attachment, an RPC call, a message between processes)
goes through this module, so the rules are the same everywhere:

* Round-trips exactly, type for type, without ``type=``: ``None``, ``bool``,
  ``int`` of any size, ``float`` (``nan``, ``inf``, ``-0.0``), ``str``,
  ``bytes``, ``bytearray``, ``list``, ``tuple``, ``dict`` (keys of any of
  these hashable types), ``set``, ``frozenset``, ``datetime`` (naive or
  aware), ``date``, ``time``, ``timedelta``, ``Decimal`` and ``UUID``, nested.
* An attrs instance is *data* (unless its class has ``eq=False``: equal
  only to itself, it is an object with identity, like a ``trio.Lock`` or a
  durable object, and is refused): in storage and attachments it comes back as a
  ``dict`` of its fields (as structured clone turns a class instance into a
  plain object); ``decode(data, type=Cls)`` structures it back through the
  one private cattrs converter. Across RPC it keeps its class (see below).
* Anything else (a function, a generator, a file, a socket, a lock, an
  object of an unknown class) is a ``TypeError`` naming the type and where
  it sits: ``args[0]["callback"] is a function; RPC values must be data``.
  It is raised before any byte is produced. A value nested deeper than
  `MAX_DEPTH` (200) containers is refused the same way, naming the limit
  and the path (the walk is recursive: see `MAX_DEPTH` for why 200); so is
  a cycle (a list that contains itself), which is reported as a cycle.

Choices where Python has more than structured clone:

* A subclass of a built-in type is carried as that type: a ``str``
  subclass comes back as ``str``, an ``OrderedDict`` as ``dict``, a named
  tuple as ``tuple``. Enum members are the exception: over RPC they keep
  their class like attrs instances; in storage they are stored as their
  ``.value`` (``type=`` brings the member back).
* An aware ``datetime`` or ``time`` keeps its UTC offset, not its zone: a
  ``zoneinfo.ZoneInfo("Europe/Paris")`` datetime comes back with
  ``datetime.timezone(timedelta(hours=2))``, the same instant and offset
  (``fold`` is kept). A ``time`` keeps the offset its zone gives when
  ``utcoffset()`` is defined; a ``ZoneInfo`` gives none without a date, so
  such a ``time`` comes back naive. The RPC copy in one process follows
  the same rule (a zone becomes its fixed offset, a user's tzinfo object is
  never shared), so a program behaves the same whether its objects are in
  this process or another.
* A float ``nan`` comes back as a ``nan`` (its payload bits are kept too).
* A frozen attrs instance may be a dict key or a set member over RPC, but
  not in storage, where it becomes a ``dict`` (which cannot be a key).

Format
------

An encoded value is one *format byte* followed by the payload. Format 1
(byte ``0x01``) is MessagePack. The byte can never start a JSON text (which
starts with ``{ [ " - 0-9 t f n`` or whitespace), so values that 0.1.0
stored as JSON are told apart and still decode, to what 0.1.0 returned. A
later format takes another byte below ``0x20`` other than ``\\t \\n \\r``.

What MessagePack has no type for is written with extension types (codes
1-127 are the application's):

* *marked arrays* for containers: an array whose first item is an empty
  extension value of code 1 (tuple), 2 (set), 3 (frozenset), 4 (record:
  ``[mark, class name, {field: value}]``), 5 (enum member: ``[mark, class
  name, value]``), 6 (library value type: ``[mark, type name, data]``) or
  7 (handle: ``[mark, handle kind, reference]``). Their items stay
  ordinary MessagePack, so nesting costs no nested encoder call and
  decoding needs one ``list_hook``;
* scalars with a bytes payload: 16 bytearray, 17 int beyond 64 bits
  (signed big-endian), 18 datetime (``>HBBBBBIB``: year to microsecond,
  then fold; then, when aware, the UTC offset in microseconds as ``>q``),
  19 date (ISO 8601 text), 20 time (``>BBBIB`` and the same optional
  offset), 21 timedelta (days, seconds, microseconds as ``>iII``), 22
  Decimal (its ``str``), 23 UUID (16 bytes).

Records, enum members and handles only appear in RPC encodings
(`encode_call`); storage encodings (`encode`) hold records as plain maps.

Why MessagePack (``msgpack``)
-----------------------------

``benchmarks/bench_values.py`` measured a prototype of this codec on
``msgpack``, ``cbor2`` and ``orjson``, against ``pickle`` and ``json``
(round trips per CPU second; a 10 KB document: pickle 10,400, json 3,540,
cbor2 1,690, msgpack 7,550, orjson 2,120; this module 3,250; a small dict:
json 174,000, this module 411,000). On the libraries alone, ``msgpack`` is
twice as fast as ``cbor2`` (whose Rust encoder is the slower half), and it
decodes our containers with one ``list_hook`` and no Python pass.
``cbor2``'s standard tags (datetimes, bignums, decimals, UUIDs, sets) are
the more natural fit on paper, but it refuses naive datetimes and loses
``Decimal("-0")``, ``Decimal("NaN")`` and sub-second UTC offsets, tuples and
frozensets need tags of our own anyway, its ``encoders=`` hook makes every
encode 2x slower, and its encoder crashes the interpreter (segmentation
fault) on a list nested a few thousand deep. ``orjson`` has the fastest
core, but JSON has no bytes, no non-string keys, no big ints and no
``nan``, and ``orjson`` has no decode hook, so both directions need a full
Python pass.

Encoding is one Python pass over the value (`MAX_DEPTH`, exact types, the
path of a refused value, the marks) that returns the value itself wherever
nothing needs changing, then one call to the C encoder. The pass cannot be
skipped even on ``msgpack``: its C encoder writes a ``bytearray`` as
``bytes`` without asking any hook. Nothing here
imports a module or calls anything the data names: a record is rebuilt
only from a class the receiver declares (`decode_call`'s ``allowed``), a
library value type only from the closed registry filled by trio_durable's
own modules (`register_value_type`), a handle only through the receiver's
callback. Never pickle.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import functools
import inspect
import io
import json
import socket
import struct
import sys
import threading
import types
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Final, NoReturn, TypeVar

import attrs
import msgpack  # type: ignore[import-untyped]  # ships no type hints
from cattrs.preconf.json import JsonConverter
from cattrs.preconf.json import make_converter as _make_json_converter

__all__ = [
    "FORMAT_V1",
    "MAX_DEPTH",
    "allow",
    "class_name",
    "copy_value",
    "decode",
    "decode_call",
    "encode",
    "encode_call",
    "is_immutable",
    "make_converter",
    "register_handle_type",
    "register_value_type",
    "structure",
]

T = TypeVar("T")

#: The first byte of every value this module encodes (format 1: MessagePack).
FORMAT_V1: Final = 0x01

#: The deepest nesting of containers accepted (a list in a list ... 200 deep).
#: The walk over a value is recursive, up to three Python frames per level
#: (sets, records), so 200 levels take at most ~600 of Python's default
#: recursion limit of 1,000 frames and leave ~400 to the caller (a handler
#: runs ~30 deep). MessagePack's own limits are higher: its packer nests
#: 1,024 levels and its unpacker 1,023, and an RPC record costs two (an
#: array and a map of fields).
MAX_DEPTH: Final = 200

# The first byte of a JSON text written by 0.1.0 (RFC 8259: whitespace, then a value).
_JSON_FIRST: Final = frozenset(b' \t\n\r{["-0123456789tfn')

# Extension codes. Marks (empty payload) start a marked array.
_X_TUPLE: Final = 1
_X_SET: Final = 2
_X_FROZENSET: Final = 3
_X_RECORD: Final = 4
_X_ENUM: Final = 5
_X_VALUE: Final = 6
_X_HANDLE: Final = 7
# Scalars (bytes payload).
_X_BYTEARRAY: Final = 16
_X_BIGINT: Final = 17
_X_DATETIME: Final = 18
_X_DATE: Final = 19
_X_TIME: Final = 20
_X_TIMEDELTA: Final = 21
_X_DECIMAL: Final = 22
_X_UUID: Final = 23

_MARK_TUPLE: Final = msgpack.ExtType(_X_TUPLE, b"")
_MARK_SET: Final = msgpack.ExtType(_X_SET, b"")
_MARK_FROZENSET: Final = msgpack.ExtType(_X_FROZENSET, b"")
_MARK_RECORD: Final = msgpack.ExtType(_X_RECORD, b"")
_MARK_ENUM: Final = msgpack.ExtType(_X_ENUM, b"")
_MARK_VALUE: Final = msgpack.ExtType(_X_VALUE, b"")
_MARK_HANDLE: Final = msgpack.ExtType(_X_HANDLE, b"")

# What decoding damaged bytes can raise: msgpack's own errors, and those of
# the extension decoders fed a wrong payload (a short struct, a Decimal that
# is not one, a timedelta out of range...).
_DECODE_ERRORS: Final = (
    ValueError,
    TypeError,
    ArithmeticError,  # decimal.InvalidOperation, OverflowError
    struct.error,
    msgpack.UnpackException,
)

_TIMEDELTA: Final = struct.Struct(">iII")  # days, seconds, microseconds
_DATETIME: Final = struct.Struct(">HBBBBBIB")  # year ... microsecond, fold
_TIME: Final = struct.Struct(">BBBIB")  # hour, minute, second, microsecond, fold
_OFFSET: Final = struct.Struct(">q")  # UTC offset in microseconds

# Types that are their own encoding and that no one can mutate. (An int
# beyond MessagePack's 64 bits is turned into an extension value by the
# packer's ``default``, so the walk need not look at ints.)
_PLAIN: Final = frozenset({str, int, bytes, float, bool, type(None)})
# Scalars an RPC copy shares. Not datetime and time: one may hold any
# tzinfo, which the copy replaces by its fixed offset (`_has_fixed_zone`).
_IMMUTABLE_SCALARS: Final = frozenset(
    {
        str,
        bytes,
        int,
        float,
        bool,
        type(None),
        datetime.date,
        datetime.timedelta,
        decimal.Decimal,
        uuid.UUID,
    }
)

# Encoding modes.
_STORE: Final = 0  # storage and attachments: records become dicts
_CALL: Final = 1  # RPC across processes: records keep their class name
_COPY: Final = 2  # RPC in one process: a copy, nothing encoded

_SUFFIX: Final = {
    _STORE: "stored values must be data",
    _CALL: "RPC values must be data",
    _COPY: "RPC values must be data",
}


# --------------------------------------------------------------------- registries


@attrs.frozen
class _ValueType:
    cls: type
    name: str
    to_data: Callable[[Any], Any]
    from_data: Callable[[Any], Any]
    immutable: bool


@attrs.frozen
class _HandleType:
    cls: type
    name: str
    to_ref: Callable[[Any], Any] | None


_value_types: dict[type, _ValueType] = {}
_value_types_by_name: dict[str, _ValueType] = {}
_handle_types: dict[type, _HandleType] = {}


def register_value_type(
    cls: type[T],
    *,
    name: str,
    to_data: Callable[[T], Any],
    from_data: Callable[[Any], T],
    immutable: bool = False,
) -> None:
    """Carry instances of ``cls``, one of trio_durable's own value types, as themselves.

    For library types that are data but not attrs classes (``Headers``). They
    keep their class everywhere, storage included, because the registry is
    closed: only trio_durable's modules call this, at import time.

    Args:
        cls: The exact class (subclasses are not covered).
        name: Its stable name in encoded data; never change it.
        to_data: Turns an instance into a value this codec carries.
        from_data: Rebuilds an instance from what ``to_data`` returned.
        immutable: Instances cannot change after construction, so an RPC
            copy may share them.
    """
    entry = _ValueType(cls, name, to_data, from_data, immutable)
    _value_types[cls] = entry
    _value_types_by_name[name] = entry


def register_handle_type(
    cls: type[T], *, name: str, to_ref: Callable[[T], Any] | None = None
) -> None:
    """Let instances of ``cls`` cross RPC as references to themselves.

    A handle (a stub, the client end of a WebSocket pair) is not copied: in
    one process the callee gets the very same object; across processes
    `encode_call` writes ``to_ref(handle)`` (for a stub: ``(namespace,
    64-hex id, name)``) and the receiver's ``resolve_handle`` callback
    rebuilds it. Handles cannot be stored.

    Args:
        cls: The exact class.
        name: The handle kind in encoded data (``"stub"``).
        to_ref: Turns a handle into data (a tuple of strings...); ``None``
            when it cannot leave its process (then `encode_call` refuses it).
    """
    _handle_types[cls] = _HandleType(cls, name, to_ref)


def class_name(cls: type) -> str:
    """The name a record or enum member of ``cls`` carries in an RPC encoding."""
    return f"{cls.__module__}.{cls.__qualname__}"


def allow(*classes: type) -> dict[str, type]:
    """The ``allowed`` mapping of `decode_call` for these attrs and enum classes."""
    return {class_name(cls): cls for cls in classes}


# --------------------------------------------------------------------- errors


class _Refused(Exception):
    """Internal: a value cannot be carried. Unwinding adds the path."""

    def __init__(self, what: str, node: object = None) -> None:
        super().__init__(what)
        self.what = what
        self.segments: list[str] = []
        # Containers on the way down, to tell a cycle from mere depth.
        self.nodes: list[int] = [] if node is None else [id(node)]
        self.too_deep = False


def _describe(value: object) -> str:
    """``a function``, ``an open file``, ``an object of class mod.Name``..."""
    kind = type(value)
    if inspect.isgenerator(value) or inspect.isasyncgen(value):
        return "a generator"
    if inspect.iscoroutine(value):
        return "a coroutine"
    if inspect.isroutine(value) or isinstance(value, functools.partial):
        if getattr(value, "__name__", "") == "<lambda>":
            return "a function (a lambda)"
        return "a function"
    if isinstance(value, type):
        return f"a class ({value.__qualname__})"
    if isinstance(value, io.IOBase):
        return "an open file"
    if isinstance(value, socket.socket):
        return "a socket"
    if inspect.ismodule(value):
        return "a module"
    name = kind.__qualname__
    if "lock" in name.lower() or "semaphore" in name.lower() or "condition" in name.lower():
        return f"a lock ({class_name(kind)})"
    if attrs.has(kind):
        return (
            f"an object of class {class_name(kind)} (an attrs class with eq=False "
            "has identity, not a value)"
        )
    return f"an object of class {class_name(kind)}"


def _key_segment(key: object) -> str:
    if type(key) is str:
        return f"[{json.dumps(key, ensure_ascii=False)}]"
    text = repr(key)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"[{text}]"


def _raise_refused(exc: _Refused, where: str, mode: int) -> NoReturn:
    segments = exc.segments[::-1]  # root first
    if exc.too_deep:
        # nodes[k] (root first) is the container at where + segments[:k].
        nodes = exc.nodes[::-1]
        first_seen: dict[int, int] = {}
        for k, node in enumerate(nodes):
            j = first_seen.setdefault(node, k)
            if j != k:
                inner = where + "".join(segments[:k])
                outer = where + "".join(segments[:j])
                raise TypeError(
                    f"{inner} is {outer} again (a cycle); {_SUFFIX[mode]} without cycles"
                ) from None
        if len(segments) > 8:  # the reader needs the start of the path, not 100 "[0]"
            segments = [*segments[:4], f"...({len(segments) - 6} more)...", *segments[-2:]]
        raise TypeError(
            f"{where + ''.join(segments)} is nested more than {MAX_DEPTH} containers deep; "
            f"the limit is {MAX_DEPTH}"
        ) from None
    raise TypeError(f"{where + ''.join(segments)} is {exc.what}; {_SUFFIX[mode]}") from None


def _raise_stack_exhausted(where: str, mode: int) -> NoReturn:
    # The caller was already so deep that a value within MAX_DEPTH used up
    # the rest of Python's recursion limit: as refused, not a crash.
    raise TypeError(
        f"{where} could not be walked: Python's recursion limit "
        f"({sys.getrecursionlimit():,} frames) was reached before the codec's own limit of "
        f"{MAX_DEPTH} nested containers (the call is made from too deep a stack); "
        f"{_SUFFIX[mode]}"
    ) from None


# --------------------------------------------------------------------- the walk


class _Walk:
    """One pass over a value: checks it and returns what to hand to the encoder.

    In ``_STORE`` and ``_CALL`` modes the result is MessagePack-ready (marks
    and extension values), and is the value itself wherever nothing needed
    changing. In ``_COPY`` mode the result is the RPC copy: every mutable
    container is new, immutable parts are shared.
    """

    __slots__ = ("_copy", "_mode")

    def __init__(self, mode: int) -> None:
        self._mode = mode
        self._copy = mode == _COPY

    def value(self, value: Any, depth: int) -> Any:
        kind = type(value)
        if kind is dict:
            if depth >= MAX_DEPTH:
                _too_deep(value)
            return self._dict(value, depth)
        if kind is list:
            if depth >= MAX_DEPTH:
                _too_deep(value)
            return self._list(value, depth)
        if kind in _PLAIN:
            return value
        if depth >= MAX_DEPTH:
            _too_deep(value)
        if kind is tuple:
            return self._tuple(value, depth)
        if kind is set or kind is frozenset:
            return self._set(value, depth, kind)
        scalar = _SCALARS.get(kind)
        if scalar is not None:
            if not self._copy:
                return scalar(value)
            if kind is datetime.datetime or kind is datetime.time:
                return _with_fixed_zone(value)
            return value
        if kind is bytearray:
            return bytearray(value) if self._copy else msgpack.ExtType(_X_BYTEARRAY, bytes(value))
        return self._other(value, kind, depth)

    def _list(self, value: list[Any], depth: int) -> list[Any]:
        new: list[Any] | None = [] if self._copy else None
        index = 0
        item: Any = None
        try:
            for index, item in enumerate(value):
                kind = type(item)
                # Leaves and the common containers are dispatched here: a
                # call per item would cost more than encoding it.
                if kind in _PLAIN:
                    if new is not None:
                        new.append(item)
                    continue
                prepared: Any
                if kind is dict and depth + 1 < MAX_DEPTH:
                    prepared = self._dict(item, depth + 1)
                elif kind is list and depth + 1 < MAX_DEPTH:
                    prepared = self._list(item, depth + 1)
                else:
                    prepared = self.value(item, depth + 1)
                if new is None and prepared is not item:
                    new = value[:index]
                if new is not None:
                    new.append(prepared)
        except _Refused as exc:
            exc.segments.append(f"[{index}]")
            exc.nodes.append(id(value))
            raise
        return value if new is None else new

    def _dict(self, value: dict[Any, Any], depth: int) -> dict[Any, Any]:
        new: dict[Any, Any] | None = {} if self._copy else None
        key: Any = None
        in_key = False
        try:
            for key, item in value.items():
                if type(key) in _PLAIN:
                    new_key = key
                else:
                    in_key = True
                    new_key = self.key(key, depth + 1)
                    in_key = False
                kind = type(item)
                if kind in _PLAIN:
                    new_item = item
                elif kind is dict and depth + 1 < MAX_DEPTH:
                    new_item = self._dict(item, depth + 1)
                elif kind is list and depth + 1 < MAX_DEPTH:
                    new_item = self._list(item, depth + 1)
                else:
                    new_item = self.value(item, depth + 1)
                if new is None and (new_key is not key or new_item is not item):
                    # Everything before this entry was kept as it was.
                    new = {}
                    for done_key, done_item in value.items():
                        if done_key is key:
                            break
                        new[done_key] = done_item
                if new is not None:
                    new[new_key] = new_item
        except _Refused as exc:
            if in_key:
                exc.segments.append(f"<key {_key_segment(key)[1:-1]}>")
            else:
                exc.segments.append(_key_segment(key))
            exc.nodes.append(id(value))
            raise
        return value if new is None else new

    def key(self, key: Any, depth: int) -> Any:
        """A dict key or set member: hashable, and never a record in storage."""
        if self._mode == _STORE and _holds_record(key):
            raise _Refused(
                "a frozen attrs instance used as a dict key or set member "
                "(storage turns it into a dict, which cannot be one)"
            )
        prepared = self.value(key, depth)
        if type(prepared) is list:
            # A marked array, which decodes back to a hashable tuple,
            # frozenset or record; it must be hashable until it is packed.
            return _HashableList(prepared)
        return prepared

    def _tuple(self, value: tuple[Any, ...], depth: int) -> Any:
        items = []
        changed = False
        index = 0
        item: Any = None
        try:
            for index, item in enumerate(value):  # noqa: B007  # index is read on error
                prepared = item if type(item) in _PLAIN else self.value(item, depth + 1)
                changed = changed or prepared is not item
                items.append(prepared)
        except _Refused as exc:
            exc.segments.append(f"[{index}]")
            exc.nodes.append(id(value))
            raise
        if self._copy:
            return tuple(items) if changed else value
        return [_MARK_TUPLE, *items]

    def _set(self, value: set[Any] | frozenset[Any], depth: int, kind: type) -> Any:
        items = []
        index = 0
        item: Any = None
        try:
            for index, item in enumerate(value):  # noqa: B007  # index is read on error
                items.append(item if type(item) in _PLAIN else self.key(item, depth + 1))
        except _Refused as exc:
            exc.segments.append(f"{{member {index}: {_key_segment(item)[1:-1]}}}")
            exc.nodes.append(id(value))
            raise
        if self._copy:
            return kind(items)
        return [_MARK_SET if kind is set else _MARK_FROZENSET, *items]

    def _other(self, value: Any, kind: type, depth: int) -> Any:
        fields = _record_fields(kind)
        if fields is not None:
            return self._record(value, kind, fields, depth)
        if isinstance(value, enum.Enum):
            if self._copy:
                return value
            if self._mode == _CALL:
                return [
                    _MARK_ENUM,
                    class_name(kind),
                    self._nested(value.value, depth, ".value", value),
                ]
            return self._nested(value.value, depth, ".value", value)
        entry = _value_types.get(kind)
        if entry is not None:
            if self._copy and entry.immutable:
                return value
            data = self._nested(entry.to_data(value), depth, "", value)
            if self._copy:
                return entry.from_data(data)
            return [_MARK_VALUE, entry.name, data]
        handle = _handle_types.get(kind)
        if handle is not None:
            if self._copy:
                return value
            if self._mode == _STORE:
                raise _Refused(
                    f"a {handle.name} (a reference to a live object), which cannot be stored"
                )
            if handle.to_ref is None:
                raise _Refused(f"a {handle.name}, which cannot leave its process")
            return [_MARK_HANDLE, handle.name, self._nested(handle.to_ref(value), depth, "", value)]
        base = _builtin_base(kind)
        if base is not None:
            return self.value(base(value), depth)
        raise _Refused(_describe(value))

    def _nested(self, value: Any, depth: int, segment: str, parent: object) -> Any:
        try:
            return self.value(value, depth + 1)
        except _Refused as exc:
            exc.segments.append(segment)
            exc.nodes.append(id(parent))
            raise

    def _record(self, value: Any, kind: type, fields: tuple[str, ...], depth: int) -> Any:
        if self._copy and _is_immutable(value, 0):
            return value
        out: dict[str, Any] = {}
        name = ""
        try:
            for name in fields:
                item = getattr(value, name)
                out[name] = item if type(item) in _PLAIN else self.value(item, depth + 1)
        except _Refused as exc:
            exc.segments.append(f".{name}")
            exc.nodes.append(id(value))
            raise
        if self._copy:
            return _rebuild(kind, out)
        if self._mode == _CALL:
            return [_MARK_RECORD, class_name(kind), out]
        return out


def _too_deep(value: object) -> NoReturn:
    exc = _Refused("too deep", value)
    exc.too_deep = True
    raise exc


class _HashableList(list[Any]):
    """A marked array used as a map key: hashable by identity so a dict can hold it.

    The packer writes it as a plain array (`_pack_default`); our decoder
    turns it back into a tuple, frozenset or record before it becomes a key.
    """

    __hash__ = object.__hash__  # type: ignore[assignment]


def _pack_default(value: Any) -> Any:
    kind = type(value)
    if kind is int:  # beyond 64 bits
        return msgpack.ExtType(_X_BIGINT, _int_bytes(value))
    if kind is _HashableList:
        return list(value)
    raise TypeError(f"cannot pack {kind.__name__}")  # the walk lets nothing else through


def _holds_record(value: Any) -> bool:
    kind = type(value)
    if _record_fields(kind) is not None:
        return True
    if kind is tuple or kind is frozenset:
        return any(_holds_record(item) for item in value)
    return False


_record_cache: dict[type, tuple[str, ...] | None] = {}


def _record_fields(kind: type) -> tuple[str, ...] | None:
    """The field names of an attrs class, or None for any other class (cached)."""
    try:
        return _record_cache[kind]
    except KeyError:
        pass
    if (
        kind in _value_types
        or kind in _handle_types
        or not attrs.has(kind)
        # eq=False: equal only to itself, so an object with identity (a
        # trio.Lock, a DurableObject, a handle), not data.
        or kind.__eq__ is object.__eq__
    ):
        fields = None
    else:
        fields = tuple(field.name for field in attrs.fields(kind))
    _record_cache[kind] = fields
    return fields


def _builtin_base(kind: type) -> Callable[[Any], Any] | None:
    """For a subclass of a built-in type (named tuple, OrderedDict...), that type."""
    for base in (str, int, float, bytes, bytearray, list, tuple, dict, set, frozenset):
        if issubclass(kind, base):
            return base
    for moment, convert in _DATETIME_BASES.items():
        if issubclass(kind, moment):
            return convert
    if issubclass(kind, decimal.Decimal):
        return decimal.Decimal
    return None


def _as_datetime(value: datetime.datetime) -> datetime.datetime:
    return datetime.datetime(
        value.year, value.month, value.day, value.hour, value.minute, value.second,
        value.microsecond, value.tzinfo, fold=value.fold,
    )  # fmt: skip


def _as_date(value: datetime.date) -> datetime.date:
    return datetime.date(value.year, value.month, value.day)


def _as_time(value: datetime.time) -> datetime.time:
    return datetime.time(
        value.hour, value.minute, value.second, value.microsecond, value.tzinfo, fold=value.fold
    )


def _as_timedelta(value: datetime.timedelta) -> datetime.timedelta:
    return datetime.timedelta(value.days, value.seconds, value.microseconds)


_DATETIME_BASES: Final[dict[type, Callable[[Any], Any]]] = {
    datetime.datetime: _as_datetime,
    datetime.date: _as_date,
    datetime.time: _as_time,
    datetime.timedelta: _as_timedelta,
}


def _int_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 8) // 8, "big", signed=True)


def _offset(value: datetime.datetime | datetime.time) -> bytes:
    """The UTC offset in microseconds (8 bytes), or nothing for a naive value.

    Only the offset is kept: a zone (zoneinfo...) comes back as the fixed
    offset it had at that moment, which names the same instant.
    """
    offset = value.utcoffset()
    if offset is None:
        return b""
    return _OFFSET.pack(offset // datetime.timedelta(microseconds=1))


def _encode_datetime(v: datetime.datetime) -> msgpack.ExtType:
    fields = (v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond, v.fold)
    return msgpack.ExtType(_X_DATETIME, _DATETIME.pack(*fields) + _offset(v))


def _encode_time(v: datetime.time) -> msgpack.ExtType:
    fields = (v.hour, v.minute, v.second, v.microsecond, v.fold)
    return msgpack.ExtType(_X_TIME, _TIME.pack(*fields) + _offset(v))


_SCALARS: Final[dict[type, Callable[[Any], msgpack.ExtType]]] = {
    datetime.datetime: _encode_datetime,
    datetime.date: lambda v: msgpack.ExtType(_X_DATE, v.isoformat().encode("ascii")),
    datetime.time: _encode_time,
    datetime.timedelta: lambda v: msgpack.ExtType(
        _X_TIMEDELTA, _TIMEDELTA.pack(v.days, v.seconds, v.microseconds)
    ),
    decimal.Decimal: lambda v: msgpack.ExtType(_X_DECIMAL, str(v).encode("ascii")),
    uuid.UUID: lambda v: msgpack.ExtType(_X_UUID, v.bytes),
}


# --------------------------------------------------------------------- decoding


class _Mark:
    __slots__ = ("code",)

    def __init__(self, code: int) -> None:
        self.code = code


_MARKS: Final = {code: _Mark(code) for code in range(_X_TUPLE, _X_HANDLE + 1)}


@functools.lru_cache(maxsize=64)
def _zone(offset: datetime.timedelta) -> datetime.timezone:
    """The fixed zone of ``offset``, one shared instance per offset.

    Decoding and RPC copies both give aware values this zone, so a copy of
    a decoded value can keep it as it is (`_has_fixed_zone`). The cache is
    small: a planted value with many offsets only costs new instances.
    """
    return datetime.timezone(offset)


def _has_fixed_zone(value: datetime.datetime | datetime.time) -> bool:
    """True when ``value`` is naive or its zone is what decoding would give it."""
    tzinfo = value.tzinfo
    if tzinfo is None:
        return True
    if type(tzinfo) is not datetime.timezone:
        return False
    zone = _zone(tzinfo.utcoffset(None))
    # A named timezone would lose its name across processes: not as decoded.
    return tzinfo is zone or tzinfo.tzname(None) == zone.tzname(None)


def _with_fixed_zone(value: Any) -> Any:
    """``value`` (a datetime or time) with its zone as decoding gives it back.

    Only the UTC offset crosses a process boundary, so an in-process copy
    keeps only the offset too: a ``ZoneInfo`` (or any other tzinfo) becomes
    the fixed offset it gives ``value``, and a ``time`` whose zone gives no
    offset without a date becomes naive.
    """
    if _has_fixed_zone(value):
        return value
    offset = value.utcoffset()
    return value.replace(tzinfo=None if offset is None else _zone(offset))


def _decode_offset(data: bytes, start: int) -> datetime.timezone | None:
    size = len(data) - start
    if size == 0:
        return None
    if size != _OFFSET.size:
        raise ValueError(f"a UTC offset of {size} bytes, not {_OFFSET.size}")
    (microseconds,) = _OFFSET.unpack_from(data, start)
    return _zone(datetime.timedelta(microseconds=microseconds))


def _decode_datetime(data: bytes) -> datetime.datetime:
    year, month, day, hour, minute, second, microsecond, fold = _DATETIME.unpack_from(data)
    tzinfo = _decode_offset(data, _DATETIME.size)
    return datetime.datetime(year, month, day, hour, minute, second, microsecond, tzinfo, fold=fold)


def _decode_time(data: bytes) -> datetime.time:
    hour, minute, second, microsecond, fold = _TIME.unpack_from(data)
    tzinfo = _decode_offset(data, _TIME.size)
    return datetime.time(hour, minute, second, microsecond, tzinfo, fold=fold)


def _decode_timedelta(data: bytes) -> datetime.timedelta:
    days, seconds, microseconds = _TIMEDELTA.unpack(data)
    return datetime.timedelta(days, seconds, microseconds)


_EXT_DECODERS: Final[dict[int, Callable[[bytes], Any]]] = {
    _X_BYTEARRAY: bytearray,
    _X_BIGINT: lambda data: int.from_bytes(data, "big", signed=True),
    _X_DATETIME: _decode_datetime,
    _X_DATE: lambda data: datetime.date.fromisoformat(data.decode("ascii")),
    _X_TIME: _decode_time,
    _X_TIMEDELTA: _decode_timedelta,
    _X_DECIMAL: lambda data: decimal.Decimal(data.decode("ascii")),
    _X_UUID: lambda data: uuid.UUID(bytes=data),
}

_MARK_NAMES: Final = {
    _X_RECORD: "record",
    _X_ENUM: "enum member",
    _X_VALUE: "library value",
    _X_HANDLE: "handle",
}


class _Decoding:
    """The hooks of one decode: extension values, and marked arrays into containers.

    A mark means something only as the first item of an array. Each mark the
    extension hook hands out must come back to the list hook in that place;
    one that does not (alone, as a map key or value, later in an array) is
    counted, and the decode fails rather than return an internal object.
    """

    __slots__ = ("allowed", "call", "resolve_handle", "stray")

    def __init__(
        self,
        call: bool,
        allowed: Mapping[str, type],
        resolve_handle: Callable[[str, Any], Any] | None,
    ) -> None:
        self.call = call
        self.allowed = allowed
        self.resolve_handle = resolve_handle
        self.stray = 0  # marks handed out and not yet consumed

    def unpack(self, data: bytes) -> Any:
        """Decode MessagePack (the bytes after the format byte)."""
        value = msgpack.unpackb(
            memoryview(data)[1:],
            ext_hook=self.ext_hook,
            list_hook=self.list_hook,
            strict_map_key=False,
            unicode_errors="surrogatepass",
        )
        if self.stray:
            raise ValueError("a container mark outside the first item of an array")
        return value

    def ext_hook(self, code: int, data: bytes) -> Any:
        if not data:
            mark = _MARKS.get(code)
            if mark is not None:
                self.stray += 1
                return mark
        decoder = _EXT_DECODERS.get(code)
        if decoder is None:
            raise ValueError(f"unknown extension type {code}")
        return decoder(data)

    def list_hook(self, items: list[Any]) -> Any:
        if not items or type(items[0]) is not _Mark:
            return items
        self.stray -= 1
        code = items[0].code
        if code == _X_TUPLE:
            return tuple(items[1:])
        if code == _X_SET:
            return set(items[1:])
        if code == _X_FROZENSET:
            return frozenset(items[1:])
        # [mark, name, data]
        what = _MARK_NAMES[code]
        if len(items) != 3 or type(items[1]) is not str:
            raise ValueError(f"a damaged {what} (not [mark, name, data])")
        name, data = items[1], items[2]
        if code == _X_VALUE:
            entry = _value_types_by_name.get(name)
            if entry is None:
                raise ValueError(f"unknown value type {name!r}")
            return _build(name, entry.from_data, data)
        if not self.call:
            raise ValueError(f"a stored value holds an RPC-only mark ({code})")
        if code == _X_HANDLE:
            resolve = self.resolve_handle
            if resolve is None:
                raise _NotAllowed(f"a {name} arrived, but the receiver takes no handles")
            return _build(name, lambda reference: resolve(name, reference), data)
        cls = self.allowed.get(name)
        if cls is None:
            raise _NotAllowed(
                f"a {what} of class {name} arrived, but the receiver does not declare "
                "that class (name it in the method's type hints)"
            )
        if code == _X_ENUM:
            return _build(name, cls, data)
        if type(data) is not dict:
            raise ValueError(f"a damaged record of class {name} (its fields are not a map)")
        return _rebuild(cls, data)


def _build(name: str, make: Callable[[Any], T], data: Any) -> T:
    """``make(data)``, where ``data`` came from the bytes: any failure is damage.

    ``make`` (a registered ``from_data``, an enum class, the receiver's
    ``resolve_handle``) is code written for what the encoder writes; fed
    something else, it may raise anything.
    """
    try:
        return make(data)
    except Exception as exc:
        raise ValueError(f"a {name} cannot be rebuilt from {type(data).__name__}: {exc!r}") from exc


class _NotAllowed(Exception):
    """Internal: decode_call met a class or handle the receiver did not declare."""


_FACTORY: Final[type[Any]] = attrs.Factory  # type: ignore[assignment]  # a class at run time


def _rebuild(cls: type[T], fields: Mapping[str, Any]) -> T:
    """An instance of ``cls`` holding ``fields``, without running ``__init__``.

    Like ``copy.copy``: converters and validators already ran on the
    original. Unknown names are ignored and missing fields take their
    defaults, so sender and receiver may run different versions of the class.
    """
    instance = cls.__new__(cls)
    for field in attrs.fields(cls):  # type: ignore[arg-type]
        name = field.name
        if name in fields:
            value = fields[name]
        elif isinstance(field.default, _FACTORY):
            factory = field.default.factory
            value = factory(instance) if field.default.takes_self else factory()
        elif field.default is not attrs.NOTHING:
            value = field.default
        else:
            raise TypeError(f"{class_name(cls)}: field {name!r} is missing and has no default")
        object.__setattr__(instance, name, value)
    return instance


# --------------------------------------------------------------------- the API

_local = threading.local()
_NOTHING_ALLOWED: Final[Mapping[str, type]] = types.MappingProxyType({})


def _packer() -> msgpack.Packer:
    # A Packer is not re-entrant nor thread-safe; one per thread is reused
    # (building one per call costs more than packing a small dict).
    try:
        return _local.packer
    except AttributeError:
        packer = _local.packer = msgpack.Packer(
            default=_pack_default,
            strict_types=True,
            use_bin_type=True,
            unicode_errors="surrogatepass",
        )
        return packer


def _pack(prepared: Any) -> bytes:
    return b"\x01" + _packer().pack(prepared)  # type: ignore[no-any-return]


def encode(value: Any, *, where: str = "value") -> bytes:
    """Encode a value to store, or to keep as a WebSocket attachment.

    The size limits (2 MiB for a value, 16,384 bytes for an attachment) apply
    to ``len()`` of the result. attrs instances are written as maps of their
    fields: they come back as dicts unless `decode` is given ``type=``.

    Args:
        value: The value (see the module docstring for what is carried).
        where: How error messages name the root (``"value"``,
            ``"attachment"``...).

    Returns:
        The format byte ``0x01`` followed by MessagePack.

    Raises:
        TypeError: A part of ``value`` cannot be stored; the message says
            what it is and where (``value["cb"] is a function; ...``).
    """
    try:
        prepared = _STORE_WALK.value(value, 0)
    except _Refused as exc:
        _raise_refused(exc, where, _STORE)
    except RecursionError:
        _raise_stack_exhausted(where, _STORE)
    return _pack(prepared)


def decode(data: bytes, type: Any = None) -> Any:
    """Decode what `encode` returned (or a JSON value stored by 0.1.0).

    Args:
        data: The encoded bytes.
        type: When given, structure the value into this type through the
            private cattrs converter (``Member``, ``list[Member]``,
            ``dict[str, Member]``, ``Member | None``...): unknown keys are
            ignored and missing fields take their defaults.

    Returns:
        A fresh value: nothing in it is shared with any other call.

    Raises:
        ValueError: ``data`` is not a value this codec wrote.
    """
    if not data:
        raise ValueError("cannot decode an empty value")
    first = data[0]
    if first == FORMAT_V1:
        try:
            value = _Decoding(False, _NOTHING_ALLOWED, None).unpack(data)
        except _DECODE_ERRORS as exc:
            raise ValueError(f"cannot decode a stored value: {exc}") from exc
    elif first in _JSON_FIRST:
        try:
            value = json.loads(data)  # written by 0.1.0: returned as 0.1.0 returned it
        except RecursionError as exc:  # json's own depth check, on a damaged or planted value
            raise ValueError(f"cannot decode a stored value: {exc}") from exc
    else:
        raise ValueError(f"unknown value format (first byte 0x{first:02x})")
    if type is None:
        return value
    return _CONVERTER.structure(value, type)


def structure(value: Any, type: type[T]) -> T:
    """Structure an already-decoded value into ``type`` (the ``type=`` of `decode`)."""
    return _CONVERTER.structure(value, type)


def encode_call(value: Any, *, where: str = "value") -> bytes:
    """Encode an RPC value (arguments or a result) to send to another process.

    Records (attrs instances) and enum members keep their class by name
    (`class_name`); registered handles (stubs) are written as references.

    Args:
        value: The value, e.g. ``(args, kwargs)`` or a result.
        where: How error messages name the root (``"args"``, ``"result"``).

    Raises:
        TypeError: A part of ``value`` cannot cross RPC; the message says
            what and where.
    """
    try:
        prepared = _CALL_WALK.value(value, 0)
    except _Refused as exc:
        _raise_refused(exc, where, _CALL)
    except RecursionError:
        _raise_stack_exhausted(where, _CALL)
    return _pack(prepared)


def decode_call(
    data: bytes,
    *,
    allowed: Mapping[str, type] = _NOTHING_ALLOWED,
    resolve_handle: Callable[[str, Any], Any] | None = None,
    where: str = "value",
) -> Any:
    """Decode what `encode_call` wrote.

    Nothing the data names is imported or called: a record or enum member is
    rebuilt only if its class name is a key of ``allowed`` (build it with
    `allow` from the method's type hints); a handle only through
    ``resolve_handle``.

    Args:
        data: The encoded bytes.
        allowed: Class name → class, for the attrs and enum classes the
            receiver accepts.
        resolve_handle: ``resolve_handle(kind, reference)`` rebuilds a handle
            (``kind`` is the name given to `register_handle_type`).
        where: How error messages name the root.

    Raises:
        TypeError: The data holds a record, enum member or handle that the
            receiver does not accept.
        ValueError: ``data`` is not a value this codec wrote.
    """
    if not data or data[0] != FORMAT_V1:
        raise ValueError("not an RPC value written by encode_call")
    try:
        return _Decoding(True, allowed, resolve_handle).unpack(data)
    except _NotAllowed as exc:
        raise TypeError(f"{where}: {exc}") from None
    except _DECODE_ERRORS as exc:
        raise ValueError(f"cannot decode an RPC value: {exc}") from exc


def copy_value(value: Any, *, where: str = "value") -> Any:
    """The RPC copy of ``value`` within one process.

    Caller and callee share nothing mutable afterwards. The result is what
    ``decode_call(encode_call(value), allowed=<every class in value>)``
    would give: records and enum members keep their class, handles (stubs)
    are the same objects, a subclass of a built-in type becomes that type.
    Values that cannot be mutated (see `is_immutable`) are returned as they
    are, at the cost of a type check.

    Raises:
        TypeError: A part of ``value`` cannot cross RPC; the message says
            what and where (raised before the call is made).
    """
    kind = type(value)
    if kind in _IMMUTABLE_SCALARS:
        return value
    try:
        if kind is tuple:
            # The common case, a call's positional arguments: all scalars.
            for item in value:
                if type(item) not in _IMMUTABLE_SCALARS and not _is_immutable(item, 1):
                    break
            else:
                return value
        elif _is_immutable(value, 0):
            return value
        return _COPY_WALK.value(value, 0)
    except _Refused as exc:
        _raise_refused(exc, where, _COPY)
    except RecursionError:
        _raise_stack_exhausted(where, _COPY)


def is_immutable(value: Any) -> bool:
    """True when no one can change ``value`` or anything in it, so it may be shared.

    Scalars (``int``, ``float``, ``str``, ``bytes``, ``bool``, ``None``,
    dates, timedeltas, ``Decimal``, ``UUID``; datetimes and times that are
    naive or whose zone is a fixed offset), enum members, immutable library
    value types, and tuples, frozensets and frozen attrs instances made of
    those. (A datetime with a ``ZoneInfo`` cannot change either, but its
    copy is a different value: the zone becomes its fixed offset.)
    """
    return _is_immutable(value, 0)


def _is_immutable(value: Any, depth: int) -> bool:
    kind = type(value)
    if kind in _IMMUTABLE_SCALARS:
        return True
    if kind is datetime.datetime or kind is datetime.time:
        return _has_fixed_zone(value)
    if depth >= MAX_DEPTH:
        return False
    if kind is tuple or kind is frozenset:
        for item in value:  # a loop, not all(): no generator on the fast path
            if type(item) not in _IMMUTABLE_SCALARS and not _is_immutable(item, depth + 1):
                return False
        return True
    fields = _frozen_fields(kind)
    if fields is not None:
        for name in fields:
            item = getattr(value, name)
            if type(item) not in _IMMUTABLE_SCALARS and not _is_immutable(item, depth + 1):
                return False
        return True
    if isinstance(value, enum.Enum):
        return True
    entry = _value_types.get(kind)
    return entry is not None and entry.immutable


_frozen_cache: dict[type, tuple[str, ...] | None] = {}


def _frozen_fields(kind: type) -> tuple[str, ...] | None:
    """The fields of a frozen attrs class (None for any other class)."""
    try:
        return _frozen_cache[kind]
    except KeyError:
        pass
    fields = _record_fields(kind)
    if fields is not None and not _is_frozen(kind):
        fields = None
    _frozen_cache[kind] = fields
    return fields


def _is_frozen(kind: type) -> bool:
    inspect_class = getattr(attrs, "inspect", None)  # attrs >= 25.4
    if inspect_class is not None:
        return bool(inspect_class(kind).is_frozen)
    # Older attrs: frozen classes get attrs' own __setattr__.
    import attr._make

    return kind.__setattr__ is attr._make._frozen_setattrs  # type: ignore[comparison-overlap]


_STORE_WALK: Final = _Walk(_STORE)
_CALL_WALK: Final = _Walk(_CALL)
_COPY_WALK: Final = _Walk(_COPY)


# --------------------------------------------------------------------- cattrs


def _native_or(kind: type[T], parse: Callable[[Any], T]) -> Callable[[Any, Any], T]:
    """A structure hook that keeps a value already of ``kind`` and parses anything else.

    Values of format 1 arrive as the native type; values stored as JSON by
    0.1.0 arrive in the form cattrs' JSON preset wrote (ISO text, base85).
    """

    def hook(value: Any, _: Any) -> T:
        if type(value) is kind:
            return value
        return parse(value)

    return hook


def make_converter() -> JsonConverter:
    """The private cattrs converter behind ``type=``.

    Built from cattrs' JSON preset (what 0.1.0 used, so its stored forms
    still structure) with hooks that also accept the native values format 1
    carries. Unknown keys are ignored; missing fields take their defaults.
    """
    import base64

    converter = _make_json_converter(forbid_extra_keys=False)
    hooks: list[tuple[type[Any], Callable[[Any], Any]]] = [
        (bytes, lambda v: bytes(v) if isinstance(v, bytearray) else base64.b85decode(v)),
        (bytearray, lambda v: bytearray(v if isinstance(v, bytes) else base64.b85decode(v))),
        (datetime.datetime, datetime.datetime.fromisoformat),
        (datetime.date, datetime.date.fromisoformat),
        (datetime.time, datetime.time.fromisoformat),
        (datetime.timedelta, lambda v: datetime.timedelta(seconds=v)),
        (decimal.Decimal, lambda v: decimal.Decimal(str(v))),
        (uuid.UUID, lambda v: uuid.UUID(str(v))),
    ]
    for kind, parse in hooks:
        converter.register_structure_hook(kind, _native_or(kind, parse))
    return converter


_CONVERTER: Final = make_converter()
