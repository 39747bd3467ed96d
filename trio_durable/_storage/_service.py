"""The storage of each live object: one :class:`Storage` per activation."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._engine import StorageEngine
from ._kv import Storage

if TYPE_CHECKING:
    from .._convert import Converter
    from .._core._live import LiveObject

__all__ = ["StorageService"]


class StorageService:
    """Hands each activation its :class:`Storage`, and drops it when the activation ends.

    Args:
        engine: The runtime's write buffer and committer.
        converter: The runtime's value converter.
    """

    __slots__ = ("_converter", "_storages", "engine")

    def __init__(self, engine: StorageEngine, converter: Converter) -> None:
        self.engine = engine
        self._converter = converter
        self._storages: dict[LiveObject, Storage] = {}

    def storage_for(self, record: LiveObject) -> Storage:
        """The :class:`Storage` of ``record``, created on first use."""
        storage = self._storages.get(record)
        if storage is None:
            storage = self._storages[record] = Storage(record, self.engine, self._converter)
        return storage

    def forget(self, record: LiveObject) -> None:
        """Drop the storage of an activation that ended (a registry close listener)."""
        self._storages.pop(record, None)
