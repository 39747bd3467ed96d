"""Argument checks of the WebSocket API: messages, attachments, tags.

Each error names the limit and the value ("attachment is 17,002 bytes
serialized; the limit is 16,384").
"""

from __future__ import annotations

from typing import Any

from .._exceptions import LimitExceededError

__all__ = ["check_attachment", "check_message", "check_tags", "check_utf8_size"]


def check_utf8_size(name: str, value: str, limit: int) -> None:
    """Refuse a text over ``limit`` UTF-8 bytes, naming it (``name``), its size and the limit.

    Raises:
        LimitExceededError: it is.
    """
    size = len(value.encode("utf-8"))
    if size > limit:
        raise LimitExceededError(f"{name} is {size:,} bytes; the limit is {limit:,}")


def check_message(message: object) -> str | bytes:
    """``message`` as ``str`` or ``bytes`` (a bytearray or memoryview is copied to bytes).

    Raises:
        TypeError: it is neither text nor bytes-like.
    """
    if isinstance(message, str | bytes):
        return message
    if isinstance(message, bytearray | memoryview):
        return bytes(message)
    raise TypeError(
        f"a WebSocket message is str (text) or bytes (binary), got {type(message).__name__}"
    )


def check_attachment(data: bytes, limit: int) -> None:
    """Refuse a serialized attachment over ``limit`` bytes.

    Raises:
        LimitExceededError: it is.
    """
    if len(data) > limit:
        raise LimitExceededError(
            f"attachment is {len(data):,} bytes serialized; the limit is {limit:,}"
        )


def check_tags(tags: Any, *, max_tags: int, max_tag_bytes: int) -> tuple[str, ...]:
    """The tags of ``ctx.accept_websocket``, without duplicates, in order.

    Raises:
        TypeError: ``tags`` is a single str, not iterable, or holds a non-str.
        ValueError: a tag is empty.
        LimitExceededError: a tag is over ``max_tag_bytes`` UTF-8 bytes, or
            there are more than ``max_tags`` distinct tags.
    """
    if isinstance(tags, str):
        raise TypeError("tags must be a list of str, not a single str")
    try:
        items = list(tags)
    except TypeError:
        raise TypeError(f"tags must be a list of str, got {type(tags).__name__}") from None
    unique: dict[str, None] = {}
    for tag in items:
        if not isinstance(tag, str):
            raise TypeError(f"each tag must be a str, got {type(tag).__name__}")
        check_utf8_size(f"tag {tag[:20]!r}…", tag, max_tag_bytes)
        if not tag:
            raise ValueError("a tag must not be empty")
        unique[tag] = None
    if len(unique) > max_tags:
        raise LimitExceededError(f"{len(unique)} tags given; the limit is {max_tags} per WebSocket")
    return tuple(unique)
