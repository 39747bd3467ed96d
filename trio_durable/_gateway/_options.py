"""The options of ``serve()``, checked once, into one frozen record.

:class:`ServeOptions` has one field per keyword option of
:func:`~trio_durable.serve`, with the same name and default, so that a
command line or a config file can map onto it. Building it checks every
value: a wrong type is a ``TypeError`` and a bad value a ``ValueError``,
both naming the option, raised by the ``serve(...)`` call itself before
anything listens (never later, from the first connection that would use it).
"""

from __future__ import annotations

import math
import ssl
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import attrs

from .._http import Request, Response
from .._limits import (
    CLOSE_TIMEOUT,
    FRAME_TIMEOUT,
    HANDSHAKE_TIMEOUT,
    MAX_BODY_BYTES,
    MAX_CONNECTIONS,
    MAX_HEADER_BYTES,
    MAX_MESSAGE_SIZE,
    PARK_AFTER,
    SEND_BUFFER_LIMIT,
    WRITE_TIMEOUT,
    positive_int_option,
    seconds_option,
    seconds_or_zero_option,
)

__all__ = ["Authenticator", "ServeOptions", "Worker"]

#: What ``serve`` calls for each request: ``async worker(request, runtime)``.
Worker = Callable[[Request, Any], Awaitable[Response]]
#: ``serve(authenticate=...)``: ``None`` lets an upgrade through, a Response refuses it.
Authenticator = Callable[[Request], Awaitable[Response | None]]





def _host(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"host must be a str (an address or a name), got {value!r}")


def _port(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"port must be an int, got {value!r}")
    if not 0 <= value <= 65535:
        raise ValueError(f"port must be from 0 to 65535 (0 picks a free one), got {value!r}")


def _ssl_context(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, ssl.SSLContext):
        raise TypeError(f"ssl_context must be an ssl.SSLContext or None, got {value!r}")


def _rate(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"max_messages_per_second must be a number or None, got {value!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(
            f"max_messages_per_second must be a positive, finite number or None, got {value!r}"
        )


def _origins(value: object) -> frozenset[str | None] | None:
    if value is None:
        return None
    if isinstance(value, str | bytes):
        raise TypeError(f"allowed_origins must be a collection of origins, not one str: {value!r}")
    if not isinstance(value, Collection):
        raise TypeError(f"allowed_origins must be a collection of origins, got {value!r}")
    for origin in value:
        if origin is not None and not isinstance(origin, str):
            raise TypeError(f"allowed_origins must hold str (or None), got {origin!r}")
    return frozenset(value)


def _callable_or_none(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{attribute.name} must be an async function or None, got {value!r}")


@attrs.frozen(kw_only=True)
class ServeOptions:
    """Every option of :func:`~trio_durable.serve`, checked when it is built.

    The fields are documented on ``serve``; their names and defaults are
    the same. Defaults come from ``trio_durable._limits``.

    Raises:
        TypeError: An option has the wrong type (the message names it).
        ValueError: An option has a bad value (the message names it).
    """

    host: str = attrs.field(validator=_host)
    port: int = attrs.field(validator=_port)
    ssl_context: ssl.SSLContext | None = attrs.field(default=None, validator=_ssl_context)
    handshake_timeout: float = attrs.field(default=HANDSHAKE_TIMEOUT, validator=seconds_option)
    max_connections: int = attrs.field(default=MAX_CONNECTIONS, validator=positive_int_option)
    max_header_bytes: int = attrs.field(default=MAX_HEADER_BYTES, validator=positive_int_option)
    max_body_bytes: int = attrs.field(default=MAX_BODY_BYTES, validator=positive_int_option)
    park_after: float = attrs.field(default=PARK_AFTER, validator=seconds_or_zero_option)
    send_buffer_limit: int = attrs.field(default=SEND_BUFFER_LIMIT, validator=positive_int_option)
    max_message_size: int = attrs.field(default=MAX_MESSAGE_SIZE, validator=positive_int_option)
    close_timeout: float = attrs.field(default=CLOSE_TIMEOUT, validator=seconds_option)
    write_timeout: float = attrs.field(default=WRITE_TIMEOUT, validator=seconds_option)
    frame_timeout: float = attrs.field(default=FRAME_TIMEOUT, validator=seconds_option)
    max_messages_per_second: float | None = attrs.field(default=None, validator=_rate)
    allowed_origins: frozenset[str | None] | None = attrs.field(default=None, converter=_origins)
    authenticate: Authenticator | None = attrs.field(default=None, validator=_callable_or_none)
