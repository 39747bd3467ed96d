"""The auto-response pair: a text message the runtime answers without waking the object."""

from __future__ import annotations

from typing import Any

import attrs

from .._limits import AUTO_RESPONSE_MAX_BYTES
from ._checks import check_utf8_size

__all__ = ["WebSocketRequestResponsePair"]


def _check_pair_text(name: str, value: Any, limit: int) -> str:
    if not isinstance(value, str):
        raise TypeError(f"the auto-response {name} must be a str, got {type(value).__name__}")
    check_utf8_size(f"the auto-response {name}", value, limit)
    if not value:
        raise ValueError(f"the auto-response {name} must not be empty")
    return value


def _check_request(instance: Any, attribute: Any, value: Any) -> None:
    _check_pair_text("request", value, AUTO_RESPONSE_MAX_BYTES)


def _check_response(instance: Any, attribute: Any, value: Any) -> None:
    _check_pair_text("response", value, AUTO_RESPONSE_MAX_BYTES)


@attrs.frozen
class WebSocketRequestResponsePair:
    """A text message the runtime answers by itself, without waking the object.

    ``ctx.set_websocket_auto_response(WebSocketRequestResponsePair("ping", "pong"))``:
    a text frame exactly equal to ``request`` gets ``response`` back. Each at
    most 2,048 UTF-8 bytes.
    """

    request: str = attrs.field(validator=_check_request)
    response: str = attrs.field(validator=_check_response)
