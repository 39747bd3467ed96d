"""Every documented limit and default, and the WebSocket close codes, in one place.

The documented limits and the defaults of ``open_runtime`` and ``serve``
live here, so a limit is changed (and documented) once. Each module that
enforces one imports it from here; error messages name the limit and the
value ("attachment is 17,002 bytes; the limit is 16,384").
"""

from __future__ import annotations

import enum
import math
from typing import Any, Final

__all__ = [
    "ALARM_FIRST_BACKOFF",
    "ALARM_MAX_JITTER",
    "ALARM_MAX_RETRIES",
    "AUTO_RESPONSE_MAX_BYTES",
    "CLOSE_TIMEOUT",
    "EVICT_AFTER",
    "FIRST_REQUEST_GRACE",
    "FRAME_TIMEOUT",
    "HANDSHAKE_TIMEOUT",
    "HIBERNATE_AFTER",
    "MAX_ATTACHMENT_BYTES",
    "MAX_BODY_BYTES",
    "MAX_CLOSE_REASON_BYTES",
    "MAX_CONNECTIONS",
    "MAX_PROXIED_CONNECTIONS",
    "MAX_HEADER_BYTES",
    "MAX_KEYS_PER_CALL",
    "MAX_KEY_BYTES",
    "MAX_MESSAGE_SIZE",
    "MAX_SQL_DATABASE_BYTES",
    "MAX_TAGS",
    "MAX_TAG_BYTES",
    "MAX_VALUE_BYTES",
    "MAX_WEBSOCKETS_PER_OBJECT",
    "PARK_AFTER",
    "SEND_BUFFER_LIMIT",
    "SENDABLE_CLOSE_CODES",
    "STORAGE_CACHE_BYTES",
    "UNSENDABLE_CLOSE_CODES",
    "WATCHDOG_RESET_AFTER",
    "WATCHDOG_WARN_AFTER",
    "WRITE_TIMEOUT",
    "CloseCode",
    "check_positive_int",
    "check_seconds",
    "optional_seconds_option",
    "positive_int_option",
    "seconds_option",
    "seconds_or_zero_option",
]

# ------------------------------------------------------------ objects

#: Seconds an idle object stays in memory before it hibernates.
HIBERNATE_AFTER: Final = 10.0
#: Seconds after its last event that background work alone keeps an object awake.
EVICT_AFTER: Final = 70.0

# ------------------------------------------------------------ storage

#: Keys one storage call may name.
MAX_KEYS_PER_CALL: Final = 128
#: Bytes an object's SQL database may hold on a backend that stores it remotely
#: (PostgreSQL): every activation on a new node reads it whole.
MAX_SQL_DATABASE_BYTES: Final = 64 * 1024 * 1024
#: Bytes of one key (UTF-8).
MAX_KEY_BYTES: Final = 2048
#: Bytes of one stored value, serialized.
MAX_VALUE_BYTES: Final = 2 * 1024 * 1024
#: Bytes the key-value caches of all live objects of a runtime may hold together.
STORAGE_CACHE_BYTES: Final = 64 * 1024 * 1024

# ------------------------------------------------------------- alarms

#: Failed attempts after which an alarm is abandoned.
ALARM_MAX_RETRIES: Final = 6
#: Seconds before the first retry; each later retry waits twice as long.
ALARM_FIRST_BACKOFF: Final = 2.0
#: The random part added to each retry delay, as a fraction of it.
ALARM_MAX_JITTER: Final = 0.25

# --------------------------------------------------------- WebSockets

#: Tags one hibernatable socket may have.
MAX_TAGS: Final = 10
#: Bytes of one tag (UTF-8).
MAX_TAG_BYTES: Final = 256
#: Hibernatable sockets one object may accept.
MAX_WEBSOCKETS_PER_OBJECT: Final = 32_768
#: Bytes of one serialized attachment.
MAX_ATTACHMENT_BYTES: Final = 16_384
#: Bytes of an auto-response request, and of its response.
AUTO_RESPONSE_MAX_BYTES: Final = 2048
#: Bytes of one received message; more closes the socket with 1009.
MAX_MESSAGE_SIZE: Final = 32 * 1024 * 1024
#: Bytes of a close reason (a Close frame's payload is at most 125 bytes).
MAX_CLOSE_REASON_BYTES: Final = 123
#: Seconds of silence after which an idle connection is parked.
PARK_AFTER: Final = 1.0
#: Bytes of unsent output after which a slow client is disconnected.
SEND_BUFFER_LIMIT: Final = 1024 * 1024
#: Seconds to wait for the peer's Close reply (or to flush ours).
CLOSE_TIMEOUT: Final = 5.0
#: Seconds a peer may stay silent in the middle of a frame or message.
FRAME_TIMEOUT: Final = 30.0

# ------------------------------------------------------------ gateway

#: Seconds a client has to send a request head (and body, and TLS handshake).
HANDSHAKE_TIMEOUT: Final = 10.0
#: Seconds a client may leave an HTTP response unread before it is dropped.
WRITE_TIMEOUT: Final = 30.0
#: Open connections (HTTP and WebSocket) above which new ones get 503.
MAX_CONNECTIONS: Final = 10_000
#: WebSocket connections one worker relays to objects on other nodes; above it, 503.
MAX_PROXIED_CONNECTIONS: Final = 10_000
#: Bytes of a request line plus headers.
MAX_HEADER_BYTES: Final = 16 * 1024
#: Bytes of a request body.
MAX_BODY_BYTES: Final = 1024 * 1024
#: Seconds a connection gets, once the server drains, to deliver the request
#: it has begun: its first (its client sent it with the connection), or one
#: whose first bytes have arrived.
FIRST_REQUEST_GRACE: Final = 1.0

# ----------------------------------------------------------- watchdog

#: Seconds a step may block the event loop before a warning is logged.
WATCHDOG_WARN_AFTER: Final = 1.0
#: Seconds a step may block the loop before its object is reset (the default
#: CPU-time limit of a Cloudflare Worker invocation).
WATCHDOG_RESET_AFTER: Final = 30.0


class CloseCode(enum.IntEnum):
    """WebSocket close codes (RFC 6455 §7.4.1) that the runtime uses or must refuse."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    RESERVED = 1004  #: never sent: reserved by RFC 6455
    NO_STATUS = 1005  #: received only: a Close frame without a code
    ABNORMAL = 1006  #: received only: the connection dropped without a Close frame
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    TLS_HANDSHAKE = 1015  #: received only: the TLS handshake failed


#: The close codes an endpoint may send: 1000-4999 except `UNSENDABLE_CLOSE_CODES`.
SENDABLE_CLOSE_CODES: Final = range(1000, 5000)
#: Codes inside `SENDABLE_CLOSE_CODES` that must never be put on the wire.
UNSENDABLE_CLOSE_CODES: Final = frozenset(
    {CloseCode.RESERVED, CloseCode.NO_STATUS, CloseCode.ABNORMAL, CloseCode.TLS_HANDSHAKE}
)


def check_seconds(name: str, value: object, *, allow_zero: bool = False) -> float:
    """``value`` as float seconds, or a clear error naming the option.

    Raises:
        TypeError: it is not a number.
        ValueError: it is negative, zero (unless ``allow_zero``), NaN or infinite.
    """
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    low_ok = value >= 0 if allow_zero else value > 0
    if not (low_ok and math.isfinite(value)):
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be a {kind}, finite number of seconds, got {value!r}")
    return float(value)


def check_positive_int(name: str, value: object) -> int:
    """``value`` as a positive int, or a clear error naming the option.

    Raises:
        TypeError: it is not an int.
        ValueError: it is zero or negative.
    """
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return value


# attrs validators of an options record: each error names the option (the
# attribute), with the same checks as above.


def seconds_option(instance: object, attribute: Any, value: object) -> None:
    """An option of positive, finite seconds."""
    check_seconds(attribute.name, value)


def seconds_or_zero_option(instance: object, attribute: Any, value: object) -> None:
    """An option of non-negative, finite seconds."""
    check_seconds(attribute.name, value, allow_zero=True)


def optional_seconds_option(instance: object, attribute: Any, value: object) -> None:
    """An option of positive, finite seconds, or ``None``."""
    if value is not None:
        check_seconds(attribute.name, value)


def positive_int_option(instance: object, attribute: Any, value: object) -> None:
    """An option that is a positive int."""
    check_positive_int(attribute.name, value)
