"""RuntimeOptions: a bad value of any option is refused with an error naming that option."""

from __future__ import annotations

import attrs
import pytest

from trio_durable._runtime_options import RuntimeOptions

_BAD: dict[str, tuple[object, type[Exception]]] = {
    "hibernate_after": (-1, ValueError),
    "evict_after": ("soon", TypeError),
    "max_value_bytes": (0, ValueError),
    "storage_cache_bytes": (1.5, TypeError),
    "max_websockets_per_object": (-3, ValueError),
    "max_attachment_bytes": (True, TypeError),
    "blocking_warning_after": (float("inf"), ValueError),
    "blocking_reset_after": (float("nan"), ValueError),
    "tune_gc": (1, TypeError),
}


def test_every_option_has_a_bad_value_here() -> None:
    assert set(_BAD) == {field.name for field in attrs.fields(RuntimeOptions)}


@pytest.mark.parametrize("name", sorted(_BAD))
def test_a_bad_option_is_refused_naming_it(name: str) -> None:
    value, error = _BAD[name]
    with pytest.raises(error, match=f"^{name} must be"):
        RuntimeOptions(**{name: value})  # type: ignore[arg-type]
