"""docs/api.md is a Markdown reference: it names every public name, with true signatures."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from typing import Any

import pytest

import trio_durable
import trio_durable.testing

ROOT = Path(__file__).resolve().parents[2]
API = (ROOT / "docs" / "api.md").read_text()
# An entry is a list item that starts with its signature:
# "- `async with td.open_runtime(a, b=1) as runtime`: ...", "  - `Storage.put(key, value)`: ...".
# Calls elsewhere in the text are examples, not signatures.
SIGNATURE = re.compile(
    r"^\s*- `(?:async (?:with )?)?(?:td\.)?(?P<name>(?:[A-Z]\w*\.)?[a-z_]\w*|[A-Z]\w*)"
    r"\((?P<params>[^`]*)\)(?: as \w+)?`",
    re.MULTILINE,
)


def public(module: Any) -> list[str]:
    names = getattr(module, "__all__", None) or [
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    ]
    return sorted(names)


@pytest.mark.parametrize("name", public(trio_durable))
def test_every_public_name_is_in_the_reference(name: str) -> None:
    assert re.search(rf"`(async (with )?)?td\.{name}\b", API), f"api.md lacks td.{name}"


@pytest.mark.parametrize("name", public(trio_durable.testing))
def test_every_testing_helper_is_in_the_reference(name: str) -> None:
    assert re.search(rf"`(async (with )?)?{name}\(", API), f"docs/api.md lacks {name}"


def resolve(name: str) -> Any:
    """The object a signature in api.md names, or None for handlers and placeholders."""
    owner_name, _, attribute = name.rpartition(".")
    if owner_name:
        owner = getattr(trio_durable, owner_name, None)
        assert owner is not None, f"api.md names {owner_name}, which is not public"
        assert hasattr(owner, attribute), f"api.md names {name}, which does not exist"
        return inspect.getattr_static(owner, attribute)
    for module in (trio_durable, trio_durable.testing):
        if hasattr(module, name):
            return getattr(module, name)
    return None  # fetch(request), alarm(info), put(mapping), ...


def split_parameters(text: str) -> list[str]:
    items, depth, current = [], 0, ""
    for char in text:
        depth += char in "([{"
        depth -= char in ")]}"
        if char == "," and depth == 0:
            items.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        items.append(current.strip())
    return [item for item in items if item not in ("*", "/")]


SIGNATURES = sorted({(m["name"], m["params"]) for m in SIGNATURE.finditer(API)})


def test_the_reference_has_signatures() -> None:
    assert len(SIGNATURES) > 60, SIGNATURES


@pytest.mark.parametrize(("name", "params"), SIGNATURES)
def test_signature_matches_the_code(name: str, params: str) -> None:
    target = resolve(name)
    if target is None:
        return
    if isinstance(target, (classmethod, staticmethod)):
        target = target.__func__
    if isinstance(target, property):
        pytest.fail(f"api.md calls {name}(...), but it is a property")
    real = [
        p for p in inspect.signature(target).parameters.values() if p.name not in ("self", "cls")
    ]
    written = split_parameters(params)
    assert [w.split("=")[0].lstrip("*") for w in written] == [p.name for p in real], (
        f"{name}: api.md says ({params}); the code has {[p.name for p in real]}"
    )
    for text, parameter in zip(written, real, strict=True):
        if "=" not in text:
            # (A bare object() default is a "not given" sentinel, not a value to show.)
            assert (
                type(parameter.default) is object
                or parameter.default is inspect.Parameter.empty
                or parameter.kind
                in (
                    inspect.Parameter.VAR_POSITIONAL,
                    inspect.Parameter.VAR_KEYWORD,
                )
            ), f"{name}: api.md shows {text} without its default {parameter.default!r}"
            continue
        try:
            default = ast.literal_eval(text.split("=", 1)[1])
        except (ValueError, SyntaxError):
            continue  # a name such as TASK_STATUS_IGNORED
        if default is not Ellipsis:
            assert default == parameter.default, (
                f"{name}: api.md says {text}; the default is {parameter.default!r}"
            )


#: Public methods left out of api.md on purpose, with the reason.
NOT_IN_THE_REFERENCE = {
    "Backend": "the storage seam, described in storage.md#the-seam",
    "SqliteBackend": "implements Backend; its options are in its signature",
    "Headers": "the Mapping methods (get, items, keys, values)",
    "WebSocketPair": "tuple methods (count, index)",
}
TRANSPORT_SIDE = {"on_message", "on_close", "on_error"}  # called by transports, not apps


@pytest.mark.parametrize("class_name", public(trio_durable))
def test_every_public_method_is_in_the_reference(class_name: str) -> None:
    cls = getattr(trio_durable, class_name)
    if not inspect.isclass(cls) or issubclass(cls, BaseException):
        return
    if class_name in NOT_IN_THE_REFERENCE:
        return
    missing = [
        name
        for name, value in inspect.getmembers(cls)
        if not name.startswith("_")
        and (inspect.isfunction(value) or inspect.ismethod(value))
        and name not in TRANSPORT_SIDE
        and not re.search(rf"\b{class_name}\.{name}\b", API)
    ]
    assert missing == [], f"api.md lacks {class_name}.{missing}"
