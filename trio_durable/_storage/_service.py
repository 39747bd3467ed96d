"""The storage of each live object: one :class:`ObjectStore` and ``Storage`` per activation.

This is the entry point the runtime, ``ObjectContext`` and the alarm
scheduler use. It also owns the runtime-wide cache budget that every
activation's key-value cache counts against.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._cache import CacheBudget
from ._engine import StorageEngine
from ._facade import Storage
from ._store import ObjectStore
from ._values import ValueCodec

if TYPE_CHECKING:
    from .._core._live import LiveObject
    from .._ids import DurableObjectId
    from ._backend import SqlLoader

__all__ = ["StorageService"]


class StorageService:
    """Hands each activation its storage, and drops it when the activation ends.

    Args:
        engine: The runtime's write buffer and committer.
        cache_bytes: The byte budget of all objects' key-value caches together.
    """

    __slots__ = ("_codec", "_storages", "_stores", "cache_budget", "engine")

    def __init__(self, engine: StorageEngine, *, cache_bytes: int) -> None:
        self.engine = engine
        self.cache_budget = CacheBudget(cache_bytes)
        self._codec = ValueCodec(engine.max_value_bytes)
        self._stores: dict[LiveObject, ObjectStore] = {}
        self._storages: dict[LiveObject, Storage] = {}

    def store_for(self, record: LiveObject) -> ObjectStore:
        """The internal storage state of ``record``, created on first use."""
        store = self._stores.get(record)
        if store is None:
            cache = self.cache_budget.new_cache()
            store = self._stores[record] = ObjectStore(record, self.engine, self._codec, cache)
        return store

    def storage_for(self, record: LiveObject) -> Storage:
        """The public ``ctx.storage`` of ``record``, created on first use."""
        storage = self._storages.get(record)
        if storage is None:
            storage = self._storages[record] = Storage(self.store_for(record))
        return storage

    def prepare(self, object_id: DurableObjectId) -> SqlLoader | None:
        """What must run before an activation of ``object_id`` is built (the registry's hook).

        A backend that keeps SQL databases remotely brings the object's here
        first, so that its constructor can use the synchronous SQL API.
        """
        engine = self.engine
        return engine.backend.sql_loader(object_id.namespace, object_id.hex, engine.current_fence())

    def forget(self, record: LiveObject) -> None:
        """Drop the storage of an activation that ended (a registry close listener)."""
        self._storages.pop(record, None)
        store = self._stores.pop(record, None)
        if store is not None:
            self.cache_budget.forget(store.cache)
