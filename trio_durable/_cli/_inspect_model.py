"""What ``trio-durable inspect`` shows, and the seam a source of it implements.

A :class:`Source` reads a deployment's stored objects without waking any
(no runtime, no lock, read-only). :class:`~trio_durable._cli._inspect_sqlite.SqliteSource`
reads a data directory, :class:`~trio_durable._cli._inspect_postgres.PostgresSource`
a deployment's PostgreSQL database (``--database URL``); both return the
same records.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import attrs

__all__ = [
    "AlarmView",
    "Deployment",
    "EntryView",
    "NamespaceView",
    "ObjectDetail",
    "ObjectView",
    "Source",
    "TableView",
    "ValueDecoder",
]

#: Stored bytes → ``(text to show, True if the text is the whole value)``.
ValueDecoder = Callable[[bytes], tuple[str, bool]]


@attrs.frozen
class AlarmView:
    """An object's pending alarm (epoch seconds)."""

    time: float
    scheduled_time: float
    retry_count: int


@attrs.frozen
class TableView:
    """A table of an object's SQL database; ``rows`` is ``None`` when it cannot be counted."""

    name: str
    rows: int | None


@attrs.frozen
class ObjectView:
    """One stored object: its ID and name, key count and size, alarm and SQL tables.

    Attributes:
        size: Bytes of its keys and values, as stored.
    """

    namespace: str
    id: str
    name: str | None
    keys: int
    size: int
    alarm: AlarmView | None
    sql_tables: tuple[TableView, ...] = ()


@attrs.frozen
class NamespaceView:
    """The stored objects of one namespace."""

    name: str
    objects: tuple[ObjectView, ...]

    @property
    def keys(self) -> int:
        """Keys of all its objects."""
        return sum(o.keys for o in self.objects)

    @property
    def size(self) -> int:
        """Bytes of all its objects' keys and values."""
        return sum(o.size for o in self.objects)

    @property
    def alarms(self) -> int:
        """Pending alarms."""
        return sum(1 for o in self.objects if o.alarm is not None)


@attrs.frozen
class Deployment:
    """Every namespace of a data directory (or database) with its objects."""

    location: str
    namespaces: tuple[NamespaceView, ...]


@attrs.frozen
class EntryView:
    """One key of an object, its stored size and its value as shown.

    Attributes:
        value: The decoded value's ``repr``, shortened.
        whole: False when ``value`` was shortened (or could not be decoded).
    """

    key: str
    size: int
    value: str
    whole: bool


@attrs.frozen
class ObjectDetail:
    """One object with its keys (up to a limit)."""

    object: ObjectView
    entries: tuple[EntryView, ...]


class Source(Protocol):
    """Where ``inspect`` reads stored objects from, without waking any."""

    @property
    def location(self) -> str:
        """What the output names as the source (a directory, a database URL)."""

    def deployment(self, namespace: str | None = None) -> Deployment:
        """Every namespace (or just ``namespace``) with its objects."""

    def find(self, ref: str) -> list[tuple[str, str, str | None]]:
        """``(namespace, hex id, name)`` of the objects a 64-hex ID or ``NAMESPACE:NAME`` names."""

    def detail(
        self, namespace: str, hex_id: str, name: str | None, *, limit: int | None
    ) -> ObjectDetail:
        """One object's keys (at most ``limit``), alarm and SQL tables."""

    def close(self) -> None:
        """Release what the source holds open."""
