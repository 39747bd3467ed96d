"""The package's one private cattrs converter.

Attachments and stored values cross it on the way to bytes and back. It is
built from cattrs' JSON preset and never touches the global converter, so a
user's own cattrs hooks cannot change what we store (and vice versa).

Evolution rules (cattrs ``docs/customizing.md``): unknown keys are ignored
on load and new attrs fields take their defaults, so a class may gain
fields between deploys without breaking stored data. No pickle anywhere:
stored bytes are JSON and can never run code.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from cattrs.preconf.json import JsonConverter, make_converter

__all__ = ["CONVERTER", "Converter"]

T = TypeVar("T")

# NaN and infinities are not JSON: refused rather than written as invalid JSON.
_plain_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


class Converter:
    """Turns values into JSON bytes and back, through one private cattrs converter."""

    __slots__ = ("_cattrs",)

    def __init__(self) -> None:
        self._cattrs: JsonConverter = make_converter(forbid_extra_keys=False)

    def dumps(self, value: Any) -> bytes:
        """Serialize ``value`` (an attrs instance or plain JSON-able data).

        Raises:
            TypeError: ``value`` cannot be represented (a set of objects, a
                socket, ...); the message names the type.
        """
        try:
            # Fast path: plain JSON data goes straight to the C encoder; it
            # refuses anything else (attrs instances, datetimes, sets), which
            # then takes the cattrs path.
            return _plain_encoder.encode(value).encode("utf-8")
        except (TypeError, ValueError):
            pass
        try:
            unstructured = self._cattrs.unstructure(value)
            return _plain_encoder.encode(unstructured).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"cannot serialize a value of type {type(value).__name__}: {exc}"
            ) from exc

    def loads(self, data: bytes, type: type[T] | None = None) -> Any:
        """Parse bytes made by :meth:`dumps`; structure into ``type`` when given."""
        raw = json.loads(data)
        if type is None:
            return raw
        return self._cattrs.structure(raw, type)



#: The one converter of the package: no user hook can reach it.
CONVERTER = Converter()
