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
    check_positive_int,
    check_seconds,
)

__all__ = ["RuntimeOptions"]


# attrs validators: each error names the option (the attribute).


def _optional_seconds(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        check_seconds(attribute.name, value)


def _seconds(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_seconds(attribute.name, value)


def _size(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_positive_int(attribute.name, value)


def _flag(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{attribute.name} must be True or False, got {value!r}")


@attrs.frozen
class RuntimeOptions:
    """Every tunable of :func:`open_runtime`, checked once when it is called.

    A bad value raises at the call (``TypeError`` or ``ValueError`` naming
    the option), before anything is opened.
    """

    hibernate_after: float = attrs.field(default=HIBERNATE_AFTER, validator=_seconds)
    evict_after: float = attrs.field(default=EVICT_AFTER, validator=_seconds)
    max_value_bytes: int = attrs.field(default=MAX_VALUE_BYTES, validator=_size)
    storage_cache_bytes: int = attrs.field(default=STORAGE_CACHE_BYTES, validator=_size)
    max_websockets_per_object: int = attrs.field(default=MAX_WEBSOCKETS_PER_OBJECT, validator=_size)
    max_attachment_bytes: int = attrs.field(default=MAX_ATTACHMENT_BYTES, validator=_size)
    blocking_warning_after: float | None = attrs.field(
        default=WATCHDOG_WARN_AFTER, validator=_optional_seconds
    )
    blocking_reset_after: float | None = attrs.field(
        default=WATCHDOG_RESET_AFTER, validator=_optional_seconds
    )
    tune_gc: bool = attrs.field(default=False, validator=_flag)
