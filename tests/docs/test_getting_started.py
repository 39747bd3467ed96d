"""docs/getting-started.md shows the chat example's real code, as plain code blocks.

The page is read on GitHub as well as in the Sphinx site, and GitHub shows
nothing for an include directive: so the code is written into the page, and
these tests keep every block identical to the definition it shows in
examples/chat/ (a method is shown without its class's indentation).
"""

from __future__ import annotations

import ast
import difflib
import re
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "getting-started.md"
EXAMPLES = sorted((ROOT / "examples" / "chat").glob("*.py"))
FENCE = re.compile(r"^```(?P<info>[^\n]*)\n(?P<body>.*?)^```$", re.DOTALL | re.MULTILINE)
DEFINITION = re.compile(r"^(?:@.*\n)*(?:async def|def|class) (?P<name>\w+)")


def definitions(path: Path) -> dict[str, str]:
    """Every function, class and method of ``path``: qualified name -> its dedented source."""
    source = path.read_text()
    lines = source.splitlines()
    found: dict[str, str] = {}

    def collect(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                start = min([d.lineno for d in node.decorator_list] + [node.lineno])
                assert node.end_lineno is not None
                found[prefix + node.name] = textwrap.dedent(
                    "\n".join(lines[start - 1 : node.end_lineno])
                )
                if isinstance(node, ast.ClassDef):
                    collect(node.body, f"{prefix}{node.name}.")

    collect(ast.parse(source).body, "")
    return found


def code_blocks(text: str) -> list[tuple[str, str]]:
    """``(info string, body)`` of every fenced block (HTML comments are not blocks)."""
    visible = re.sub(r"<!--.*?-->", "", text, flags=re.DOTALL)
    return [(m["info"].strip(), m["body"].rstrip("\n")) for m in FENCE.finditer(visible)]


def test_the_page_has_no_include_directive() -> None:
    # GitHub renders an include directive as nothing at all.
    blocks = code_blocks(PAGE.read_text())
    assert not [info for info, _ in blocks if info.startswith("{")], blocks


def test_every_definition_shown_is_the_examples_own() -> None:
    known = {name: source for path in EXAMPLES for name, source in definitions(path).items()}
    shown = [body for info, body in code_blocks(PAGE.read_text()) if info == "python"]
    checked = 0
    for body in shown:
        match = DEFINITION.match(body)
        if match is None:
            continue  # a usage example: it runs as a doc test
        if body in known.values():
            checked += 1
            continue
        name = match["name"]
        candidates = [qualified for qualified in known if qualified.rsplit(".", 1)[-1] == name]
        assert candidates, f"getting-started.md shows {name}, which examples/chat/ does not define"
        diff = "\n".join(
            difflib.unified_diff(
                known[candidates[0]].splitlines(),
                body.splitlines(),
                f"examples/chat: {candidates[0]}",
                "docs/getting-started.md",
                lineterm="",
            )
        )
        raise AssertionError(f"the page's copy of {candidates[0]} is out of date:\n{diff}")
    # The page walks through the app, the worker, the room and the limiter.
    assert checked >= 10, f"only {checked} definitions shown"


@pytest.mark.parametrize("page", ["getting-started.md", "index.md"])
def test_the_run_command_is_the_readmes(page: str) -> None:
    readme = (ROOT / "README.md").read_text()
    readme_command = next(body for info, body in code_blocks(readme) if info == "sh")
    text = (ROOT / "docs" / page).read_text()
    page_commands = [body for info, body in code_blocks(text) if info == "sh"]
    assert page_commands == [readme_command]
