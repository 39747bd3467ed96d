"""The options of ``open_runtime``, checked once, into one frozen record.

``open_runtime(...)`` builds a :class:`RuntimeOptions` from its arguments
before anything opens, so a bad value raises at the call, naming the option.
The command line builds its flags and settings-file keys from the same record
(``_cli/_options.py``). Where storage lives (``data_dir``, ``database``,
``backend``) and ``cluster`` are checked by ``open_runtime`` itself: they
name parts built there.
"""

from __future__ import annotations

from typing import Any

import attrs

from ._limits import (
    EVICT_AFTER,
    HIBERNATE_AFTER,
    MAX_ATTACHMENT_BYTES,
    MAX_VALUE_BYTES,
    MAX_WEBSOCKETS_PER_OBJECT,
    STORAGE_CACHE_BYTES,
    WATCHDOG_RESET_AFTER,
    WATCHDOG_WARN_AFTER,
    optional_seconds_option,
    positive_int_option,
    seconds_option,
)

__all__ = ["RuntimeOptions"]


def _flag(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{attribute.name} must be True or False, got {value!r}")


@attrs.frozen
class RuntimeOptions:
    """Every tunable of :func:`open_runtime`, checked once when it is called.

    A bad value raises at the call (``TypeError`` or ``ValueError`` naming
    the option), before anything is opened.
    """

    hibernate_after: float = attrs.field(default=HIBERNATE_AFTER, validator=seconds_option)
    evict_after: float = attrs.field(default=EVICT_AFTER, validator=seconds_option)
    max_value_bytes: int = attrs.field(default=MAX_VALUE_BYTES, validator=positive_int_option)
    storage_cache_bytes: int = attrs.field(
        default=STORAGE_CACHE_BYTES, validator=positive_int_option
    )
    max_websockets_per_object: int = attrs.field(
        default=MAX_WEBSOCKETS_PER_OBJECT, validator=positive_int_option
    )
    max_attachment_bytes: int = attrs.field(
        default=MAX_ATTACHMENT_BYTES, validator=positive_int_option
    )
    blocking_warning_after: float | None = attrs.field(
        default=WATCHDOG_WARN_AFTER, validator=optional_seconds_option
    )
    blocking_reset_after: float | None = attrs.field(
        default=WATCHDOG_RESET_AFTER, validator=optional_seconds_option
    )
    tune_gc: bool = attrs.field(default=False, validator=_flag)
