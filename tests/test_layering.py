"""The package's modules depend on each other in one direction only.

Every import of a ``trio_durable`` module by another one counts: at module
level, inside functions, and under ``TYPE_CHECKING``. The test fails on any
cycle between modules (naming it), and on any import that goes up the layers
of ``docs/architecture.md`` (naming the importer, the imported module and
their layers). It reads the source with :mod:`ast`, so nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import trio_durable

PACKAGE_DIR = Path(trio_durable.__file__).parent

#: The layers, bottom first (see docs/architecture.md). A module may import
#: modules of its own layer (without a cycle) and of the layers below it.
#: Each entry is a module name or a package prefix ending in ".".
LAYERS: list[tuple[str, list[str]]] = [
    (
        "values",
        [
            "trio_durable._exceptions",
            "trio_durable._limits",
            "trio_durable._codec",
            "trio_durable._http",
            "trio_durable._ids",
        ],
    ),
    ("activation core", ["trio_durable._core."]),
    ("stubs", ["trio_durable._stubs"]),
    (
        "services",
        [
            "trio_durable._storage.",
            "trio_durable._websocket.",
            "trio_durable._alarms",
            "trio_durable._watchdog",
        ],
    ),
    ("objects", ["trio_durable._object"]),
    ("gateway", ["trio_durable._gateway."]),
    ("cluster", ["trio_durable._cluster."]),
    (
        "composition root",
        [
            "trio_durable._runtime",
            "trio_durable._runtime_options",
            "trio_durable._runtime_statistics",
            "trio_durable._runtime_storage",
            "trio_durable._gc_tuning",
        ],
    ),
    (
        "applications",
        [
            "trio_durable._app",
            "trio_durable._cli.",
            "trio_durable._cli",
            "trio_durable.testing.",
            "trio_durable.__main__",
            "trio_durable",  # the package itself: re-exports only
        ],
    ),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(importer: str, is_package: bool, level: int, module: str | None) -> str:
    if level == 0:
        return module or ""
    base = importer.split(".")
    # A package's own __init__ is its base; a plain module's base is its package.
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[: -(level - 1)]
    return ".".join([*base, module] if module else base)


def _imports() -> dict[str, set[str]]:
    """Module name -> the trio_durable modules it imports (anywhere in its body)."""
    modules = {_module_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, is_package, node.level, node.module)
                # `from . import x` may name a submodule x.
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target.startswith("trio_durable") and target != name:
                    graph[name].add(target)
    return graph


def _layer_of(module: str) -> int:
    best, best_len = -1, -1
    for index, (_, members) in enumerate(LAYERS):
        for member in members:
            matches = module == member or (
                member.endswith(".") and (module + ".").startswith(member)
            )
            if matches and len(member) > best_len:
                best, best_len = index, len(member)
    return best


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _cycle_path(graph: dict[str, set[str]], component: list[str]) -> str:
    """One concrete loop inside a strongly connected component, for the message."""
    members = set(component)
    start = component[0]
    path = [start]
    seen = {start}
    node = start
    while True:
        nxt = sorted(graph[node] & members)
        closing = [n for n in nxt if n == start]
        if closing and len(path) > 1:
            return " -> ".join([*path, start])
        fresh = [n for n in nxt if n not in seen]
        if not fresh:
            return " -> ".join([*path, *nxt[:1]])
        node = fresh[0]
        seen.add(node)
        path.append(node)


def test_every_module_has_a_layer() -> None:
    unplaced = sorted(name for name in _imports() if _layer_of(name) < 0)
    assert not unplaced, f"modules with no layer in LAYERS (add them): {unplaced}"


def test_no_import_cycles() -> None:
    graph = _imports()
    cycles = [_cycle_path(graph, component) for component in _cycles(graph)]
    assert not cycles, "import cycles between modules:\n" + "\n".join(cycles)


def test_imports_point_down_the_layers() -> None:
    graph = _imports()
    upward = []
    for importer, targets in sorted(graph.items()):
        for target in sorted(targets):
            if target == "trio_durable" and importer.startswith("trio_durable."):
                upward.append(f"{importer} imports the package root (import the module instead)")
                continue
            low, high = _layer_of(importer), _layer_of(target)
            if high > low:
                upward.append(f"{importer} ({LAYERS[low][0]}) imports {target} ({LAYERS[high][0]})")
    assert not upward, "imports that point up the layers:\n" + "\n".join(upward)


@pytest.mark.parametrize(
    ("importer", "is_package", "level", "module", "expected"),
    [
        ("trio_durable._core._live", False, 1, "_gates", "trio_durable._core._gates"),
        ("trio_durable._core._live", False, 2, "_ids", "trio_durable._ids"),
        ("trio_durable._core", True, 1, "_live", "trio_durable._core._live"),
        ("trio_durable", True, 1, "_http", "trio_durable._http"),
        ("trio_durable._stubs", False, 0, "trio", "trio"),
    ],
)
def test_relative_imports_resolve(
    importer: str, is_package: bool, level: int, module: str, expected: str
) -> None:
    assert _resolve(importer, is_package, level, module) == expected


def test_cycle_detection_finds_a_planted_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycle_path(graph, ["a", "b", "c"]) == "a -> b -> c -> a"


def test_docs_architecture_names_the_file_of_every_module() -> None:
    """A newcomer can find every module's job in the ownership table."""
    text = (PACKAGE_DIR.parent / "docs" / "architecture.md").read_text()
    package = PACKAGE_DIR
    missing = [
        path.relative_to(package).as_posix()
        for path in sorted(package.rglob("*.py"))
        if path.name != "__init__.py"
        and "testing" not in path.relative_to(package).parts
        and f"`{path.relative_to(package).as_posix()}`" not in text
        and f"`{path.name}`" not in text
    ]
    assert missing == [], f"docs/architecture.md does not say what these own: {missing}"
