"""Stored values to bytes and back: the one place storage touches the value format.

Every key-value write goes through :meth:`ValueCodec.dumps` and every read
through :meth:`ValueCodec.loads`, so changing the format (a new codec) is an
edit of this module alone.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, TypeVar

from .._exceptions import StorageError
from ._checks import check_value_size, short_key

if TYPE_CHECKING:
    from .._convert import Converter

__all__ = ["ValueCodec"]

T = TypeVar("T")


class ValueCodec:
    """Serializes stored values with the runtime's converter, within the size limit.

    Args:
        converter: The runtime's one private converter.
        max_value_bytes: The largest serialized value a write may store.
    """

    __slots__ = ("_converter", "max_value_bytes")

    def __init__(self, converter: Converter, max_value_bytes: int) -> None:
        self._converter = converter
        self.max_value_bytes = max_value_bytes

    def dumps(self, key: str, value: Any) -> bytes:
        """The bytes stored for ``value`` under ``key``.

        Raises:
            TypeError: ``value`` is ``None`` or cannot be serialized.
            LimitExceededError: the serialized value is over the size limit.
        """
        kind = type(value)
        if kind is str or kind is int or kind is bool:
            data = json.dumps(value, ensure_ascii=False).encode("utf-8")  # fast path
        elif value is None:
            raise TypeError(f"cannot store None under {key!r}; use delete() to remove a key")
        else:
            data = self._converter.dumps(value)
        check_value_size(key, data, self.max_value_bytes)
        return data

    def loads(self, key: str, data: bytes, type: type[T] | None) -> Any:
        """The value stored as ``data`` under ``key``, structured into ``type`` if given.

        Raises:
            StorageError: the stored bytes are not a value this runtime wrote
                (damaged, or planted by something else); names the key.
        """
        try:
            return self._converter.loads(data, type)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StorageError(
                f"the stored value of key {short_key(key)} cannot be decoded "
                f"({len(data):,} bytes, starting {bytes(data[:16])!r}): {exc}; it was not "
                "written by this runtime or is damaged"
            ) from exc
