"""IDs: 64 hex, bound to their namespace, stable across restarts."""

from __future__ import annotations

import secrets

import pytest

import trio_durable as td

from .conftest import OBJECTS


async def test_named_id_is_64_hex_deterministic_and_keeps_name(runtime: td.Runtime) -> None:
    ns = runtime.namespace("counters")
    first, second = ns.id_from_name("home"), ns.id_from_name("home")
    assert first == second, "the same name must give the same ID"
    assert len(str(first)) == 64 and int(str(first), 16) >= 0, f"not 64 hex: {first}"
    assert first.name == "home", "a named ID keeps its name"
    assert ns.id_from_name("other") != first, "different names give different IDs"


async def test_unique_ids_are_distinct_and_nameless(runtime: td.Runtime) -> None:
    ns = runtime.namespace("counters")
    ids = {ns.new_unique_id() for _ in range(100)}
    assert len(ids) == 100, "unique IDs must not repeat"
    assert all(i.name is None for i in ids), "unique IDs have no name"


async def test_id_from_string_round_trips_and_compares_by_value(runtime: td.Runtime) -> None:
    ns = runtime.namespace("counters")
    named = ns.id_from_name("home")
    rebuilt = ns.id_from_string(str(named))
    assert rebuilt == named, "an ID rebuilt from its string equals the original"
    assert hash(rebuilt) == hash(named), "equal IDs hash equal"
    assert rebuilt.name is None, "a rebuilt ID does not know its name"
    assert {named: 1}[rebuilt] == 1, "IDs work as dict keys"


async def test_random_hex_is_rejected(runtime: td.Runtime) -> None:
    ns = runtime.namespace("counters")
    with pytest.raises(ValueError, match="forged or belongs to another namespace"):
        ns.id_from_string(secrets.token_hex(32))


async def test_foreign_namespace_id_is_rejected(runtime: td.Runtime) -> None:
    foreign = runtime.namespace("workers").id_from_name("home")
    with pytest.raises(ValueError, match="not an ID of namespace 'counters'"):
        runtime.namespace("counters").id_from_string(str(foreign))
    with pytest.raises(ValueError, match="belongs to namespace 'workers'"):
        runtime.namespace("counters").get(foreign)


@pytest.mark.parametrize(
    ("text", "message"),
    [("abc", "64 hex characters; got 3"), ("z" * 64, "must be hex"), ("", "got 0")],
)
async def test_malformed_id_strings_are_rejected(
    runtime: td.Runtime, text: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        runtime.namespace("counters").id_from_string(text)


async def test_non_string_inputs_are_type_errors(runtime: td.Runtime) -> None:
    ns = runtime.namespace("counters")
    with pytest.raises(TypeError, match="must be a str"):
        ns.id_from_name(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a str"):
        ns.id_from_string(b"00" * 32)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expected a DurableObjectId"):
        ns.get("home")  # type: ignore[arg-type]


async def test_hand_made_id_with_bad_tag_is_rejected(runtime: td.Runtime) -> None:
    forged = td.DurableObjectId("counters", secrets.token_hex(32), "home")
    with pytest.raises(ValueError, match="forged"):
        runtime.namespace("counters").get(forged)


async def test_ids_survive_a_restart_on_the_same_data_dir(runtime_factory) -> None:  # type: ignore[no-untyped-def]
    async with runtime_factory(objects=OBJECTS) as rt:
        named = str(rt.namespace("counters").id_from_name("home"))
        unique = str(rt.namespace("counters").new_unique_id())
    async with runtime_factory(objects=OBJECTS) as rt:
        ns = rt.namespace("counters")
        assert str(ns.id_from_name("home")) == named, "named IDs must be stable across restarts"
        assert str(ns.id_from_string(unique)) == unique, "unique IDs stay valid after a restart"


async def test_another_deployment_rejects_our_ids(tmp_path) -> None:  # type: ignore[no-untyped-def]
    async with td.open_runtime(objects=OBJECTS, data_dir=tmp_path / "a") as rt:
        ours = str(rt.namespace("counters").new_unique_id())
    async with td.open_runtime(objects=OBJECTS, data_dir=tmp_path / "b") as rt:
        with pytest.raises(ValueError, match="forged"):
            rt.namespace("counters").id_from_string(ours)
