"""Object IDs cannot be forged, nor moved to another namespace or deployment."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import trio_durable as td
from trio_durable._ids import DurableObjectId, IdMinter
from trio_durable._stubs import Namespace


@attrs.define(eq=False)
class Vault(td.DurableObject):
    async def secret(self) -> str:
        return f"secret of {self.ctx.id.hex[:8]}"


OBJECTS: dict[str, type[td.DurableObject]] = {"vaults": Vault, "lockers": Vault}


async def test_hand_built_id_with_a_forged_value_is_refused(runtime_factory: Any) -> None:
    async with runtime_factory(objects=OBJECTS) as runtime:
        vaults = runtime.namespace("vaults")
        forged = DurableObjectId("vaults", "ab" * 32)
        with pytest.raises(ValueError, match="forged or belongs to another namespace"):
            vaults.get(forged)
        assert runtime.statistics().activations == 0, "nothing was activated"


async def test_any_changed_bit_makes_an_id_invalid(runtime_factory: Any) -> None:
    async with runtime_factory(objects=OBJECTS) as runtime:
        vaults = runtime.namespace("vaults")
        real = vaults.new_unique_id().hex
        for position in (0, 20, 31, 32, 50, 63):  # in the body and in the tag
            digit = "0" if real[position] != "0" else "1"
            tampered = real[:position] + digit + real[position + 1 :]
            with pytest.raises(ValueError, match="forged"):
                vaults.id_from_string(tampered)


async def test_unique_id_cannot_be_moved_to_another_namespace(runtime_factory: Any) -> None:
    async with runtime_factory(objects=OBJECTS) as runtime:
        vaults, lockers = runtime.namespace("vaults"), runtime.namespace("lockers")
        unique = vaults.new_unique_id()
        with pytest.raises(ValueError, match="not an ID of namespace 'lockers'"):
            lockers.id_from_string(unique.hex)
        with pytest.raises(ValueError, match="belongs to namespace 'vaults', not 'lockers'"):
            lockers.get(unique)
        relabelled = DurableObjectId("lockers", unique.hex)  # the namespace field forged
        with pytest.raises(ValueError, match="forged or belongs to another namespace"):
            lockers.get(relabelled)
        assert await vaults.get(unique).secret() == f"secret of {unique.hex[:8]}"


async def test_id_of_another_deployment_is_refused(tmp_path: Path) -> None:
    async with td.open_runtime(OBJECTS, tmp_path / "one") as one:
        theirs = one.namespace("vaults").new_unique_id()
        named = one.namespace("vaults").id_from_name("alice")
    async with td.open_runtime(OBJECTS, tmp_path / "two") as two:
        vaults = two.namespace("vaults")
        with pytest.raises(ValueError, match="forged"):
            vaults.id_from_string(theirs.hex)
        assert vaults.id_from_name("alice") != named, "names map to other IDs elsewhere"
    async with td.open_runtime(OBJECTS, tmp_path / "one") as again:
        assert again.namespace("vaults").id_from_string(theirs.hex) == theirs, "same deployment"


_SECRET = secrets.token_bytes(32)


@settings(max_examples=100, deadline=None)
@given(raw=st.binary(min_size=32, max_size=32), upper=st.booleans())
async def test_random_ids_are_refused(raw: bytes, upper: bool) -> None:
    # No runtime needed: checking an ID needs only the namespace and the secret.
    vaults = Namespace("vaults", Vault, IdMinter(_SECRET), dispatcher=None)  # type: ignore[arg-type]
    text = raw.hex().upper() if upper else raw.hex()
    with pytest.raises(ValueError, match="forged"):
        vaults.id_from_string(text)
