"""The public API is exactly ``trio_durable.__all__``, and it presents itself as such."""

from __future__ import annotations

import inspect
import types

import pytest

import trio_durable as td


def _public_attributes() -> set[str]:
    return {
        name
        for name, value in vars(td).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }


def test_all_lists_every_public_name_and_nothing_else() -> None:
    listed = set(td.__all__)
    assert len(listed) == len(td.__all__), "a name appears twice in __all__"
    assert listed == _public_attributes(), (
        f"in __all__ but not defined: {sorted(listed - _public_attributes())}; "
        f"public but not in __all__: {sorted(_public_attributes() - listed)}"
    )


@pytest.mark.parametrize("name", sorted(td.__all__))
def test_public_name_reports_the_package_as_its_module(name: str) -> None:
    value = getattr(td, name)
    assert value.__module__ == "trio_durable", f"td.{name}.__module__ is {value.__module__!r}"


@pytest.mark.parametrize("name", sorted(td.__all__))
def test_public_name_has_a_docstring(name: str) -> None:
    value = getattr(td, name)
    assert inspect.getdoc(value), f"td.{name} has no docstring"


@pytest.mark.parametrize("name", ["SqliteBackend", "Backend", "Namespace", "Stub"])
def test_names_users_need_in_signatures_are_public(name: str) -> None:
    assert name in td.__all__, f"td.{name} must be importable from the package"


def test_durability_power_needs_no_private_import(tmp_path: object) -> None:
    backend = td.SqliteBackend(str(tmp_path), durability="power")
    assert backend.durability == "power"
    with pytest.raises(ValueError, match="durability must be 'process' or 'power'"):
        td.SqliteBackend(str(tmp_path), durability="disk")  # type: ignore[arg-type]
