"""What ``trio-durable inspect`` shows, and the seam a source of it implements.

A :class:`Source` reads a deployment's stored objects without waking any
(no runtime, no lock, read-only). :class:`~trio_durable._cli._inspect_sqlite.SqliteSource`
reads a data directory, :class:`~trio_durable._cli._inspect_postgres.PostgresSource`
a deployment's PostgreSQL database (``--database URL``); both return the
same records.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

import attrs

from .._ids import ID_HEX_LENGTH, IdMinter

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
    "find_objects",
    "is_hex",
]

#: ``(namespace, hex id, name)`` of a stored object.
ObjectRef = tuple[str, str, str | None]

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

    @classmethod
    def of(cls, location: str, objects: Iterable[ObjectView]) -> Deployment:
        """The deployment holding ``objects``, grouped by namespace in name order."""
        by_namespace: dict[str, list[ObjectView]] = {}
        for view in objects:
            by_namespace.setdefault(view.namespace, []).append(view)
        groups = sorted(by_namespace.items())
        return cls(location, tuple(NamespaceView(name, tuple(found)) for name, found in groups))


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


def find_objects(
    ref: str,
    *,
    by_id: Callable[[str | None, str], list[ObjectRef]],
    by_name: Callable[[str, str], str | None],
    secret: Callable[[], bytes | None],
) -> list[ObjectRef]:
    """The objects ``ref`` names: a 64-hex ID, ``NAMESPACE:NAME`` or ``NAMESPACE:ID``.

    A name that was never recorded still finds its ID (minted with the
    deployment's secret), so asking about an object that holds nothing says
    so rather than failing; so does an ID of a namespace that holds nothing.

    Args:
        ref: What the user typed.
        by_id: The recorded objects with this ID (in this namespace, or any
            when ``None``).
        by_name: The recorded ID of this namespace's name, if any.
        secret: The deployment's ID secret, ``None`` when it has none yet.
    """
    namespace, colon, rest = ref.partition(":")
    if not colon:
        return by_id(None, ref.lower()) if _is_id(ref) else []
    if _is_id(rest):
        return by_id(namespace, rest.lower()) or [(namespace, rest.lower(), None)]
    hex_id = by_name(namespace, rest)
    if hex_id is not None:
        return [(namespace, hex_id, rest)]
    key = secret()
    if key is None:
        return []
    return [(namespace, IdMinter(key).from_name(namespace, rest).hex, rest)]


def is_hex(text: str) -> bool:
    """True if ``text`` is hexadecimal."""
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


def _is_id(text: str) -> bool:
    return len(text) == ID_HEX_LENGTH and is_hex(text)
