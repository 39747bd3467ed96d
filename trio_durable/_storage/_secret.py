"""Checking that a deployment's ID secret is the one its stored objects were minted with.

Named IDs are keyed hashes of the name, and every ID carries a tag made
with the secret. A data dir whose secret was lost or replaced would start
fine and then silently orphan every object: the same name would give a new
ID, and stored IDs would be rejected as forged. A backend checks a few stored
objects against the secret at start and refuses to go on instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from .._exceptions import StorageError
from .._ids import IdMinter
from ._backend import ObjectEntry

__all__ = ["check_secret", "missing_secret_error"]

_REMEDY = (
    "starting would orphan every stored object; restore the original secret (from a "
    "backup of the file) or start on a new data dir"
)


def _minted_with(minter: IdMinter, entry: ObjectEntry) -> bool:
    if entry.name is not None:
        return minter.from_name(entry.namespace, entry.name).hex == entry.hex_id
    try:
        minter.from_string(entry.namespace, entry.hex_id)
    except ValueError:
        return False
    return True


def check_secret(secret: bytes, sample: Sequence[ObjectEntry], *, where: str) -> None:
    """Refuse a secret that did not mint the stored objects of ``sample``.

    Args:
        secret: The secret found in storage.
        sample: A few stored objects (a named one and a unique one, if any).
        where: Where the secret is kept, for the message (a file, a database).

    Raises:
        StorageError: an object of ``sample`` was minted with another secret.
    """
    minter = IdMinter(secret)
    for entry in sample:
        if not _minted_with(minter, entry):
            label = f"named {entry.name!r}" if entry.name is not None else "unique"
            raise StorageError(
                f"the ID secret in {where} is not the one its objects were created with "
                f"({label} object {entry.namespace}:{entry.hex_id[:16]}… does not match); "
                + _REMEDY
            )


def missing_secret_error(where: str) -> StorageError:
    """The error for storage that holds objects but no ID secret."""
    return StorageError(f"{where} holds objects but no ID secret; {_REMEDY}")
