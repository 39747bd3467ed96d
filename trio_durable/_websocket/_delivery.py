"""Idle frame codecs, lent to the readers of woken connections.

Most wake-ups of a parked connection need no codec at all: whole small
frames take the codec-free fast path
(:func:`~trio_durable._websocket._frames.parse_simple`). One that does (a
control frame, a fragment, a frame cut by the read) borrows an idle
:class:`~trio_durable._websocket._frames.FrameCodec` here rather than building
one, and gives it back when its connection parks or ends: an idle codec holds
nothing of the connection that used it (see ``FrameCodec.is_idle``).

Which task serves a woken connection is the parking's business (its workers,
see ``_parking.py``); the reader (``_reader.py``) does the serving.
"""

from __future__ import annotations

from typing import Final

from ._frames import FrameCodec

__all__ = ["CodecPool"]

#: Idle codecs kept for reuse.
_KEEP_CODECS: Final = 64


class CodecPool:
    """The idle codecs of one connection home.

    Args:
        max_message_size: The message limit of the codecs handed out.
    """

    __slots__ = ("_codecs", "_max_message_size")

    def __init__(self, max_message_size: int) -> None:
        self._max_message_size = max_message_size
        self._codecs: list[FrameCodec] = []

    def take_codec(self) -> FrameCodec:
        """An idle codec, reused when one is free."""
        codecs = self._codecs
        if codecs:
            return codecs.pop()
        return FrameCodec(max_message_size=self._max_message_size)

    def give_codec(self, codec: FrameCodec) -> None:
        """Take back a codec; only an idle one is kept (it holds nothing then)."""
        if codec.is_idle and len(self._codecs) < _KEEP_CODECS:
            self._codecs.append(codec)
