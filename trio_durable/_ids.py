"""Object IDs: 64 hex characters bound to their namespace and deployment.

An ID is 32 bytes: a 16-byte *body* followed by a 16-byte tag,
``HMAC-SHA256(secret, namespace, body)[:16]``. The secret is the
deployment's (kept by the storage backend, so every process and node of a
deployment shares it). A named ID's body is itself a keyed hash of the name,
so the same name always gives the same ID; a unique ID's body is random.
Checking the tag rejects a random 64-hex string and an ID minted by another
namespace or another deployment, with a clear ``ValueError``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Final

import attrs

__all__ = ["ID_HEX_LENGTH", "SHARD_COUNT", "DurableObjectId", "IdMinter", "shard_of"]

_BODY_BYTES: Final = 16
_TAG_BYTES: Final = 16
ID_HEX_LENGTH: Final = 2 * (_BODY_BYTES + _TAG_BYTES)

#: Shards of a deployment: objects are placed by shard. Fixed forever:
#: changing it would move every object.
SHARD_COUNT: Final = 256


def shard_of(hex_id: str) -> int:
    """The shard of an object, from its 64-hex ID (its first byte: uniform)."""
    return int(hex_id[:2], 16)


@attrs.frozen(repr=False)
class DurableObjectId:
    """The identity of one object: 64 hex characters bound to a namespace.

    IDs compare and hash by namespace and value; ``name`` is ``None`` for
    unique IDs and for IDs rebuilt with ``Namespace.id_from_string``.
    Not constructible by hand: get IDs from a ``Namespace``.
    """

    namespace: str
    hex: str
    name: str | None = attrs.field(default=None, eq=False)

    def __str__(self) -> str:
        return self.hex

    def __repr__(self) -> str:
        label = f" name={self.name!r}" if self.name is not None else ""
        return f"<DurableObjectId {self.namespace}:{self.hex[:12]}…{label}>"


class IdMinter:
    """Mints and checks the IDs of one deployment (one secret).

    Args:
        secret: The deployment's ID secret (32 random bytes, kept by the backend).
    """

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _tag(self, namespace: str, body: bytes) -> bytes:
        message = b"td-id\x00" + namespace.encode("utf-8") + b"\x00" + body
        return hmac.new(self._secret, message, hashlib.sha256).digest()[:_TAG_BYTES]

    def _make(self, namespace: str, body: bytes, name: str | None) -> DurableObjectId:
        return DurableObjectId(namespace, (body + self._tag(namespace, body)).hex(), name)

    def from_name(self, namespace: str, name: str) -> DurableObjectId:
        """The ID of ``name`` in ``namespace``: the same name always gives the same ID."""
        if not isinstance(name, str):
            raise TypeError(f"an object name must be a str, got {type(name).__name__}")
        message = b"td-name\x00" + namespace.encode("utf-8") + b"\x00" + name.encode("utf-8")
        body = hmac.new(self._secret, message, hashlib.sha256).digest()[:_BODY_BYTES]
        return self._make(namespace, body, name)

    def unique(self, namespace: str) -> DurableObjectId:
        """A fresh random ID that no name maps to."""
        return self._make(namespace, secrets.token_bytes(_BODY_BYTES), None)

    def from_string(self, namespace: str, hex_id: str) -> DurableObjectId:
        """Rebuild an ID of ``namespace`` from its 64-hex form.

        Raises:
            TypeError: ``hex_id`` is not a str.
            ValueError: it is not 64 hex characters, or was not minted by
                this namespace of this deployment (forged or foreign).
        """
        if not isinstance(hex_id, str):
            raise TypeError(f"an object ID string must be a str, got {type(hex_id).__name__}")
        if len(hex_id) != ID_HEX_LENGTH:
            raise ValueError(f"an object ID is {ID_HEX_LENGTH} hex characters; got {len(hex_id)}")
        try:
            raw = bytes.fromhex(hex_id)
        except ValueError:
            raise ValueError(f"an object ID must be hex; got {hex_id!r}") from None
        body, tag = raw[:_BODY_BYTES], raw[_BODY_BYTES:]
        if not hmac.compare_digest(tag, self._tag(namespace, body)):
            raise ValueError(
                f"{hex_id[:16]}… is not an ID of namespace {namespace!r}: "
                "it was forged or belongs to another namespace"
            )
        return DurableObjectId(namespace, raw.hex())

    def check(self, namespace: str, object_id: object) -> DurableObjectId:
        """``object_id`` itself, once checked to be a genuine ID of ``namespace``.

        Raises:
            TypeError: it is not a :class:`DurableObjectId`.
            ValueError: it belongs to another namespace, or was forged.
        """
        if not isinstance(object_id, DurableObjectId):
            raise TypeError(f"expected a DurableObjectId, got {type(object_id).__name__}")
        if object_id.namespace != namespace:
            raise ValueError(
                f"ID {object_id.hex[:16]}… belongs to namespace {object_id.namespace!r}, "
                f"not {namespace!r}"
            )
        # An ID is a frozen value, but one could be built by hand: check the tag.
        self.from_string(namespace, object_id.hex)
        return object_id
