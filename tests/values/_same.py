"""Exact comparison of decoded values: equal, of the same types all the way down."""

from __future__ import annotations

import decimal
import math
from typing import Any


def same(a: Any, b: Any) -> bool:
    """True when ``a`` and ``b`` are equal with identical types at every level.

    ``nan`` equals ``nan``, ``-0.0`` differs from ``0.0``, ``True`` from ``1``;
    datetimes and times must also agree on ``tzinfo`` offset and ``fold``.
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
    if hasattr(a, "utcoffset") and hasattr(a, "fold"):  # datetime, time
        return a == b and a.utcoffset() == b.utcoffset() and a.fold == b.fold
    return bool(a == b)
