"""Argument checks of the storage API, against the limits of ``_limits.py``.

Every violation names the limit and the value: "key is 2,100 bytes; the
limit is 2,048". A value of the wrong type is a ``TypeError``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .._exceptions import LimitExceededError
from .._limits import MAX_KEY_BYTES, MAX_KEYS_PER_CALL

__all__ = [
    "check_entries",
    "check_key",
    "check_keys",
    "check_list_args",
    "check_value_size",
    "prefix_end",
    "short_key",
]


def short_key(key: str) -> str:
    """``key`` quoted for an error message, cut after 40 characters."""
    return repr(key) if len(key) <= 40 else repr(key[:40]) + "…"


def check_key(key: object) -> str:
    """A valid key, or a clear ``TypeError``/``ValueError``."""
    if not isinstance(key, str):
        raise TypeError(f"a storage key must be a str, got {type(key).__name__}")
    if len(key) * 4 > MAX_KEY_BYTES or not key.isascii():
        try:
            size = len(key.encode("utf-8"))
        except UnicodeEncodeError:
            raise ValueError(
                f"storage key {short_key(key)} is not valid Unicode (it has a lone surrogate)"
            ) from None
        if size > MAX_KEY_BYTES:
            raise LimitExceededError(f"key is {size:,} bytes; the limit is {MAX_KEY_BYTES:,}")
    return key


def _check_count(count: int) -> None:
    if count > MAX_KEYS_PER_CALL:
        raise LimitExceededError(
            f"{count:,} keys in one call; the limit is {MAX_KEYS_PER_CALL:,}"
        )


def check_keys(keys: object) -> list[str]:
    """A list of valid keys from an iterable of keys (not a single string)."""
    if isinstance(keys, str | bytes | bytearray | Mapping) or not isinstance(keys, Iterable):
        raise TypeError(
            f"expected a key (str) or an iterable of keys, got {type(keys).__name__}"
        )
    result = list(keys)
    _check_count(len(result))
    for key in result:
        check_key(key)
    return result


def check_entries(entries: object) -> dict[str, Any]:
    """The entries of ``put(mapping)``, checked."""
    if not isinstance(entries, Mapping):
        raise TypeError(
            f"put() takes a key and a value, or a mapping; got {type(entries).__name__}"
        )
    _check_count(len(entries))
    for key in entries:
        check_key(key)
    return dict(entries)


def check_value_size(key: str, data: bytes, limit: int) -> None:
    """Refuse a serialized value bigger than ``limit``."""
    if len(data) > limit:
        raise LimitExceededError(
            f"value for key {short_key(key)} is {len(data):,} bytes serialized; "
            f"the limit is {limit:,}"
        )


def _optional_str(name: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"list({name}=...) must be a str, got {type(value).__name__}")
    return value


def prefix_end(prefix: str) -> str | None:
    """The smallest string above every string that starts with ``prefix``."""
    chars = list(prefix)
    while chars:
        code = ord(chars[-1])
        if code < 0x10FFFF:
            code += 1
            if 0xD800 <= code <= 0xDFFF:  # surrogates cannot be stored; skip them
                code = 0xE000
            chars[-1] = chr(code)
            return "".join(chars)
        chars.pop()
    return None


def check_list_args(
    start: object,
    start_after: object,
    end: object,
    prefix: object,
    reverse: object,
    limit: object,
) -> tuple[str | None, str | None, bool, int | None]:
    """Turn ``list()`` arguments into ``(start, end, reverse, limit)``.

    ``start`` is inclusive, ``end`` exclusive; ``start_after`` becomes the
    smallest key above it; ``prefix`` narrows both ends.
    """
    lo = _optional_str("start", start)
    after = _optional_str("start_after", start_after)
    hi = _optional_str("end", end)
    pre = _optional_str("prefix", prefix)
    if lo is not None and after is not None:
        raise ValueError("list() takes start or start_after, not both")
    if not isinstance(reverse, bool):
        raise TypeError(f"list(reverse=...) must be a bool, got {type(reverse).__name__}")
    if limit is not None:
        if not isinstance(limit, int) or isinstance(limit, bool):
            raise TypeError(f"list(limit=...) must be an int, got {type(limit).__name__}")
        if limit <= 0:
            raise ValueError(f"list(limit=...) must be greater than 0, got {limit}")
    if after is not None:
        lo = after + "\x00"  # the smallest key strictly above start_after
    if pre:
        if lo is None or lo < pre:
            lo = pre
        upper = prefix_end(pre)
        if upper is not None and (hi is None or upper < hi):
            hi = upper
    return lo, hi, reverse, limit
