"""Stored values to bytes and back: the one place storage touches the value format.

Every key-value write goes through :meth:`ValueCodec.dumps` and every read
through :meth:`ValueCodec.loads`; both delegate to the package's one value
codec (``_codec``), so stored values, attachments and RPC values follow the
same rules. Rows written by 0.1.0 (JSON text) still read: the codec tells
them apart by their first byte.
"""

from __future__ import annotations

from typing import Any, TypeVar

from .. import _codec
from .._exceptions import StorageError
from ._checks import check_value_size, short_key

__all__ = ["ValueCodec"]

T = TypeVar("T")


class ValueCodec:
    """Encodes stored values with the value codec, within the size limit.

    Args:
        max_value_bytes: The largest encoded value a write may store.
    """

    __slots__ = ("max_value_bytes",)

    def __init__(self, max_value_bytes: int) -> None:
        self.max_value_bytes = max_value_bytes

    def dumps(self, key: str, value: Any) -> bytes:
        """The bytes stored for ``value`` under ``key``.

        Nothing is written here: callers encode every value of a call before
        they buffer any, so a refused value leaves storage as it was.

        Raises:
            TypeError: ``value`` is ``None``, or a part of it cannot be stored
                (the message names its type and place: ``value for key 'k'["a"][0]
                is a function (a lambda); stored values must be data``).
            LimitExceededError: the encoded value is over the size limit.
        """
        if value is None:
            raise TypeError(
                f"cannot store None under {short_key(key)}; use delete() to remove a key"
            )
        data = _codec.encode(value, where=f"value for key {short_key(key)}")
        check_value_size(key, data, self.max_value_bytes)
        return data

    def loads(self, key: str, data: bytes, type: type[T] | None) -> Any:
        """The value stored as ``data`` under ``key``, structured into ``type`` if given.

        Raises:
            StorageError: the stored bytes are not a value this runtime wrote
                (damaged, or planted by something else); names the key.
            cattrs.BaseValidationError: the value does not fit ``type``
                (as from cattrs itself; the stored value is fine).
        """
        try:
            value = _codec.decode(data)
        except ValueError as exc:
            raise StorageError(
                f"the stored value of key {short_key(key)} cannot be decoded "
                f"({len(data):,} bytes, starting {bytes(data[:16])!r}): {exc}; it was not "
                "written by this runtime or is damaged"
            ) from exc
        if type is None:
            return value
        return _codec.structure(value, type)
