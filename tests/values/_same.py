"""Exact comparison of decoded values: equal, of the same types all the way down."""

from __future__ import annotations

import datetime
import decimal
import math
from typing import Any

import attrs

from trio_durable._http import Request, Response


def same(a: Any, b: Any) -> bool:
    """True when ``a`` and ``b`` are equal with identical types at every level.

    ``nan`` equals ``nan``, ``-0.0`` differs from ``0.0``, ``True`` from ``1``;
    datetimes and times must also agree on ``tzinfo`` (its type, offset and
    name) and ``fold``; attrs instances are compared field by field.
    """
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, decimal.Decimal):
        return str(a) == str(b)  # sign, exponent and NaN payload included
    if isinstance(a, dict):
        if len(a) != len(b):
            return False
        # Keys must match exactly too: pair them by equality, then compare.
        for key, value in a.items():
            matches = [k for k in b if same(k, key)]
            if len(matches) != 1 or not same(value, b[matches[0]]):
                return False
        return True
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, set | frozenset):
        return len(a) == len(b) and all(any(same(x, y) for y in b) for x in a)
    if isinstance(a, datetime.datetime | datetime.time):
        return (
            a == b
            and a.utcoffset() == b.utcoffset()
            and a.fold == b.fold
            and type(a.tzinfo) is type(b.tzinfo)
            and a.tzname() == b.tzname()
        )
    if attrs.has(type(a)) and not isinstance(a, BaseException):
        return all(
            same(getattr(a, field.name), getattr(b, field.name)) for field in attrs.fields(type(a))
        )
    return bool(a == b)


def fixed_zones(value: Any) -> Any:
    """``value`` with every zone as a round trip gives it back: its fixed UTC offset.

    The codec keeps a datetime's or time's offset, not its zone (a ``time``
    whose zone gives no offset comes back naive); this is the expected value
    of a trip through storage, an attachment or RPC.
    """
    kind = type(value)
    if kind is datetime.datetime or kind is datetime.time:
        if value.tzinfo is None:
            return value
        offset = value.utcoffset()
        return value.replace(tzinfo=None if offset is None else datetime.timezone(offset))
    if kind is list:
        return [fixed_zones(item) for item in value]
    if kind is tuple:
        return tuple(fixed_zones(item) for item in value)
    if kind is set or kind is frozenset:
        return kind(fixed_zones(item) for item in value)
    if kind is dict:
        return {fixed_zones(key): fixed_zones(item) for key, item in value.items()}
    if attrs.has(kind) and kind not in (Request, Response):  # those hold no datetimes
        changes = {
            field.name: fixed_zones(getattr(value, field.name))
            for field in attrs.fields(kind)
            if field.init
        }
        return attrs.evolve(value, **changes)
    return value
