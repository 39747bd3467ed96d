"""Uncommitted changes laid over committed rows, for ``list()``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import attrs

from ._backend import KeyRange

__all__ = ["Changes", "PendingChanges", "merged_rows"]


class Changes(Protocol):
    """Changes not yet committed: ``clear`` empties the object first, then ``puts``."""

    clear: bool
    puts: dict[str, bytes | None]


@attrs.define(eq=False, slots=True)
class PendingChanges:
    """The writes of one open transaction (never clears)."""

    clear: bool = False
    puts: dict[str, bytes | None] = attrs.field(factory=dict)


def _in_range(key: str, key_range: KeyRange) -> bool:
    return (key_range.start is None or key >= key_range.start) and (
        key_range.end is None or key < key_range.end
    )


async def merged_rows(
    fetch: Callable[[KeyRange], Awaitable[list[tuple[str, bytes]]]],
    overlays: Sequence[Changes],
    key_range: KeyRange,
) -> list[tuple[str, bytes]]:
    """``fetch(key_range)`` with uncommitted changes (oldest first) laid over it.

    A deleted key may hide one fetched row, so the fetch asks for as many
    extra rows as there are deletions.
    """
    for index in range(len(overlays) - 1, -1, -1):
        if overlays[index].clear:
            overlays = overlays[index:]
            base: list[tuple[str, bytes]] = []
            break
    else:
        if not overlays:
            return await fetch(key_range)
        limit = key_range.limit
        if limit is not None:
            limit += sum(1 for o in overlays for v in o.puts.values() if v is None)
        base = await fetch(attrs.evolve(key_range, limit=limit))
    merged = dict(base)
    for overlay in overlays:
        for key, value in overlay.puts.items():
            if not _in_range(key, key_range):
                continue
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
    keys = sorted(merged, reverse=key_range.reverse)
    if key_range.limit is not None:
        keys = keys[: key_range.limit]
    return [(key, merged[key]) for key in keys]
