"""One activation's view of its object's alarm.

The object's alarm is a single record, stored with its key-value data. This
activation remembers it once read, writes every change into the object's
batch (so the scheduler learns it only once it is committed), and tracks
whether the running ``alarm()`` handler changed it: a handler that set or
deleted the alarm itself decides what happens next, one that did not has
its alarm cleared or retried by the scheduler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from ._backend import AlarmRecord
from ._engine import MISSING, StorageEngine

if TYPE_CHECKING:
    from .._core._live import LiveObject

__all__ = ["AlarmState"]

_UNKNOWN: Final[Any] = object()


class AlarmState:
    """The alarm of one activation's object (internal).

    Args:
        record: The activation.
        engine: Where alarm changes are buffered and committed.
    """

    __slots__ = ("_changed", "_engine", "_known", "_record")

    def __init__(self, record: LiveObject, engine: StorageEngine) -> None:
        self._record = record
        self._engine = engine
        self._known: AlarmRecord | None = _UNKNOWN
        self._changed = False

    async def current(self) -> AlarmRecord | None:
        """The alarm as this activation sees it: uncommitted changes included.

        The caller holds the input gate.
        """
        if self._known is _UNKNOWN:
            alarm = self._engine.pending_alarm(self._record.key)
            if alarm is MISSING:
                oid = self._record.object_id
                alarm = await self._engine.backend.read_alarm(oid.namespace, oid.hex)
            self._known = alarm
        return self._known

    def schedule(self, alarm: AlarmRecord | None) -> None:
        """Set (or with ``None`` delete) the alarm on the user's behalf."""
        self._write(alarm)
        self._changed = True

    def settle(self, alarm: AlarmRecord | None) -> None:
        """Store the scheduler's verdict after a handler ran: a retry, or nothing."""
        self._write(alarm)

    def cleared(self) -> None:
        """``delete_all`` removed the alarm (its batch's ``clear`` deletes it)."""
        self._known = None
        self._changed = True

    def handler_started(self) -> None:
        """The ``alarm()`` handler starts: it sees no alarm until it sets one."""
        self._known = None
        self._changed = False

    @property
    def changed_by_handler(self) -> bool:
        """True if the alarm was set, deleted or cleared since :meth:`handler_started`."""
        return self._changed

    def _write(self, alarm: AlarmRecord | None) -> None:
        self._known = alarm
        write = self._engine.batch_for(self._record).write
        write.alarm = alarm if alarm is not None else False
